//! `meshctl check`: whether the sandbox's mesh works, group by group, each failure with a
//! hint, as `linkerd check` does: the controller and its CA root, every node's ztunnel, every
//! waypoint, and what the controller makes of the applied objects.

use std::time::SystemTime;

use serde::Serialize;

use super::findings;
use super::proxies::{self, Proxy};
use super::sandbox::Sandbox;
use super::system::controller_get;
use crate::sandbox::host::procfs;
use crate::sandbox::model::control::{Component, SystemProcess};

/// A root with less left than this is a warning: time to plan its rotation.
pub const ROOT_WARNING_DAYS: u64 = 60;
/// A root with less left than this is an error: workload certificates will soon fail.
pub const ROOT_ERROR_DAYS: u64 = 7;

/// How one check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, with a caveat to act on.
    Warning,
    /// Broken: the mesh does not do what it should.
    Error,
}

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The group it belongs to (`control plane`, `node proxies`, ...).
    pub group: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found.
    pub message: String,
    /// What to do about it, for warnings and errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    fn ok(group: &'static str, message: impl Into<String>) -> Self {
        Self {
            group,
            status: Status::Ok,
            message: message.into(),
            hint: None,
        }
    }

    fn failed(group: &'static str, status: Status, message: String, hint: String) -> Self {
        Self {
            group,
            status,
            message,
            hint: Some(hint),
        }
    }
}

const CONTROL_PLANE: &str = "control plane";
const NODE_PROXIES: &str = "node proxies";
const WAYPOINTS: &str = "waypoints";
const CONFIGURATION: &str = "configuration";

/// Runs every check against `sb`, in the order they are shown.
pub fn run(sb: &Sandbox) -> Vec<Check> {
    let mut checks = control_plane(sb);
    checks.extend(node_proxies(sb));
    checks.extend(waypoints(sb));
    checks.extend(configuration(sb));
    checks
}

/// Whether `process` is recorded as started and still runs.
fn running(process: Option<&SystemProcess>) -> bool {
    process.and_then(|p| p.process).is_some_and(procfs::alive)
}

fn control_plane(sb: &Sandbox) -> Vec<Check> {
    let control = match sb.control() {
        Ok(control) => control,
        Err(e) => {
            let hint = "recreate the sandbox: `meshctl down`, then `meshctl up`".to_owned();
            return vec![Check::failed(
                CONTROL_PLANE,
                Status::Error,
                e.to_string(),
                hint,
            )];
        }
    };
    let mut checks = Vec::new();
    if !running(control.find(&Component::Controller)) {
        checks.push(Check::failed(
            CONTROL_PLANE,
            Status::Error,
            "the controller is not running".to_owned(),
            "start it with `meshctl start controller`; see why it stopped with \
             `meshctl logs controller`"
                .to_owned(),
        ));
    } else {
        checks.push(match controller_get(&control.netns, "/ready") {
            Ok(answer) if answer.status == 200 => {
                Check::ok(CONTROL_PLANE, "the controller is ready")
            }
            Ok(answer) => Check::failed(
                CONTROL_PLANE,
                Status::Error,
                format!(
                    "the controller is not ready: {}",
                    String::from_utf8_lossy(&answer.body).trim()
                ),
                "see `meshctl logs controller`".to_owned(),
            ),
            Err(e) => Check::failed(
                CONTROL_PLANE,
                Status::Error,
                e.to_string(),
                "see `meshctl logs controller`".to_owned(),
            ),
        });
    }
    let root = std::fs::read_to_string(sb.layout().root_cert())
        .map_err(|e| format!("the CA root certificate cannot be read: {e}"))
        .and_then(|pem| root_validity(&pem));
    checks.push(match root {
        Ok((not_before, not_after)) => root_check(SystemTime::now(), not_before, not_after),
        Err(message) => Check::failed(
            CONTROL_PLANE,
            Status::Error,
            message,
            "the controller writes it on first start: see `meshctl logs controller`".to_owned(),
        ),
    });
    checks
}

/// The validity of the first certificate of `pem`.
fn root_validity(pem: &str) -> Result<(SystemTime, SystemTime), String> {
    let invalid = |e: hbone::CertError| format!("the CA root certificate is invalid: {e}");
    let certs = hbone::cert::certificates_from_pem(pem, "root certificate").map_err(invalid)?;
    hbone::cert::certificate_validity(&certs[0]).map_err(invalid)
}

/// How a root valid from `not_before` until `not_after` stands at `now`.
fn root_check(now: SystemTime, not_before: SystemTime, not_after: SystemTime) -> Check {
    const DAY: u64 = 24 * 3600;
    let rotate = "rotate the root: put the new CA in the sandbox's CA folder in Istio's plug-in \
                  layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) and \
                  `meshctl restart controller`"
        .to_owned();
    if now < not_before {
        return Check::failed(
            CONTROL_PLANE,
            Status::Error,
            "the CA root certificate is not valid yet".to_owned(),
            "check the host's clock".to_owned(),
        );
    }
    let days = not_after
        .duration_since(now)
        .map_or(0, |left| left.as_secs() / DAY);
    let status = match days {
        d if d < ROOT_ERROR_DAYS => Status::Error,
        d if d < ROOT_WARNING_DAYS => Status::Warning,
        _ => {
            return Check::ok(
                CONTROL_PLANE,
                format!("the CA root certificate is valid for {days} more days"),
            );
        }
    };
    let message = if days == 0 && not_after <= now {
        "the CA root certificate has expired".to_owned()
    } else {
        format!("the CA root certificate expires in {days} days")
    };
    Check::failed(CONTROL_PLANE, status, message, rotate)
}

fn node_proxies(sb: &Sandbox) -> Vec<Check> {
    let Ok(control) = sb.control() else {
        return Vec::new();
    };
    sb.cluster
        .nodes
        .iter()
        .map(|node| {
            let running = running(control.find(&Component::Ztunnel(node.name.clone())));
            match proxies::ztunnel(sb, &node.name).ok().filter(|_| running) {
                Some(proxy) => ztunnel_check(&node.name, &proxy),
                None => Check::failed(
                    NODE_PROXIES,
                    Status::Error,
                    format!("the ztunnel of {} is not running", node.name),
                    format!(
                        "pods on {0} have no mesh: start it with `meshctl start ztunnel --node \
                         {0}`; see why it stopped with `meshctl logs ztunnel --node {0}`",
                        node.name
                    ),
                ),
            }
        })
        .collect()
}

/// A running ztunnel: ready, and every certificate it holds valid.
fn ztunnel_check(node: &str, proxy: &Proxy) -> Check {
    let logs = format!("see `meshctl logs ztunnel --node {node}`");
    if let Err(reason) = proxies::ready(proxy) {
        let message = format!("the ztunnel of {node} is not ready: {reason}");
        return Check::failed(NODE_PROXIES, Status::Error, message, logs);
    }
    let dump = match proxies::config_dump(proxy) {
        Ok(dump) => dump,
        Err(e) => return Check::failed(NODE_PROXIES, Status::Error, e.to_string(), logs),
    };
    match certificate_problems(&dump) {
        (valid, problems) if problems.is_empty() => Check::ok(
            NODE_PROXIES,
            format!(
                "the ztunnel of {node} is ready, config synced, {valid} workload certificates valid"
            ),
        ),
        (_, problems) => Check::failed(
            NODE_PROXIES,
            Status::Error,
            format!(
                "the ztunnel of {node} holds bad certificates: {}",
                problems.join("; ")
            ),
            logs,
        ),
    }
}

/// How many certificates of a proxy's config dump are valid, and what is wrong with the others.
fn certificate_problems(dump: &serde_json::Value) -> (usize, Vec<String>) {
    let mut valid = 0;
    let mut problems = Vec::new();
    for entry in dump["certificates"].as_array().into_iter().flatten() {
        let identity = entry["identity"].as_str().unwrap_or("?");
        match (entry["state"].as_str(), &entry["certificate"]) {
            (Some("failed"), _) => problems.push(format!(
                "{identity}: {}",
                entry["error"].as_str().unwrap_or("failed")
            )),
            (_, cert) if cert["expired"] == true => problems.push(format!("{identity}: expired")),
            (_, cert) if cert.is_object() => valid += 1,
            // Pending: asked for, not yet issued; readiness covers it.
            _ => {}
        }
    }
    (valid, problems)
}

fn waypoints(sb: &Sandbox) -> Vec<Check> {
    proxies::waypoints(sb)
        .iter()
        .map(|(proxy, namespace, pod)| {
            let what = format!("the {}", proxy.name);
            match proxies::ready(proxy) {
                Ok(()) => Check::ok(WAYPOINTS, format!("{what} is ready")),
                Err(reason) => Check::failed(
                    WAYPOINTS,
                    Status::Error,
                    format!("{what} is not ready: {reason}"),
                    format!("see `meshctl logs {pod} -n {namespace}`"),
                ),
            }
        })
        .collect()
}

fn configuration(sb: &Sandbox) -> Vec<Check> {
    let objects: Vec<_> = sb
        .cluster
        .objects
        .iter()
        .map(|a| a.object.clone())
        .collect();
    let found = findings::of_applied(&sb.cfg.state_dir, &objects);
    if found.is_empty() {
        let message = format!("the mesh acts on all {} applied objects", objects.len());
        return vec![Check::ok(CONFIGURATION, message)];
    }
    found
        .into_iter()
        .map(|finding| {
            let status = if finding.error {
                Status::Error
            } else {
                Status::Warning
            };
            let hint = "fix the object and `meshctl apply` it again, or `meshctl delete` it";
            Check::failed(CONFIGURATION, status, finding.text, hint.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_root_is_fine_then_a_warning_then_an_error_as_it_nears_its_end() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 365 * DAY;
        let at = |left: u32| root_check(end - left * DAY, start, end);
        assert_eq!(at(60).status, Status::Ok);
        assert_eq!(
            at(60).message,
            "the CA root certificate is valid for 60 more days"
        );
        assert_eq!(at(59).status, Status::Warning);
        assert_eq!(at(59).message, "the CA root certificate expires in 59 days");
        assert_eq!(at(7).status, Status::Warning);
        assert_eq!(at(6).status, Status::Error);
        let expired = root_check(end + DAY, start, end);
        assert_eq!(expired.status, Status::Error);
        assert_eq!(expired.message, "the CA root certificate has expired");
        assert!(expired.hint.unwrap().contains("ca-cert.pem"));
        assert_eq!(root_check(start - DAY, start, end).status, Status::Error);
    }

    #[test]
    fn a_generated_root_reads_as_valid_for_its_lifetime() {
        let authority = hbone::Authority::generate_root("cluster.local", 90 * DAY).unwrap();
        let (not_before, not_after) = root_validity(&authority.root_pem()).unwrap();
        let check = root_check(not_before, not_before, not_after);
        assert_eq!(check.status, Status::Ok, "{check:?}");
        assert!(root_validity("not pem").unwrap_err().contains("invalid"));
    }

    #[test]
    fn failed_and_expired_certificates_are_named_pending_ones_are_not_counted() {
        let dump = serde_json::json!({"certificates": [
            {"identity": "spiffe://cluster.local/ns/a/sa/ok", "state": "available",
             "certificate": {"expired": false}},
            {"identity": "spiffe://cluster.local/ns/a/sa/old", "state": "refreshing",
             "certificate": {"expired": true}},
            {"identity": "spiffe://cluster.local/ns/a/sa/bad", "state": "failed",
             "error": "CA refused", "certificate": null},
            {"identity": "spiffe://cluster.local/ns/a/sa/new", "state": "pending",
             "certificate": null},
        ]});
        let (valid, problems) = certificate_problems(&dump);
        assert_eq!(valid, 1);
        assert_eq!(
            problems,
            [
                "spiffe://cluster.local/ns/a/sa/old: expired",
                "spiffe://cluster.local/ns/a/sa/bad: CA refused"
            ]
        );
    }
}
