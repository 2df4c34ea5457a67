//! `meshctl check`: whether the sandbox's mesh works, group by group, each failure with a
//! hint, as `linkerd check` does: the controller and its CA root, every node's ztunnel, every
//! waypoint, and what the controller makes of the applied objects.

use std::time::SystemTime;

use super::findings;
use super::proxies::{self, Proxy};
use super::sandbox::Sandbox;
use super::system::controller_get;
use crate::operator::check::{
    self as model, CONTROL_PLANE, Check, NODE_PROXIES, Status, WAYPOINTS, root_check, root_validity,
};
use crate::sandbox::host::procfs;
use crate::sandbox::model::control::{Component, SystemProcess};

/// How to replace the sandbox's root.
const ROTATE: &str = "rotate the root: put the new CA in the sandbox's CA folder in Istio's \
                      plug-in layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) \
                      and `meshctl restart controller`";

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
        Ok((not_before, not_after)) => root_check(SystemTime::now(), not_before, not_after, ROTATE),
        Err(message) => Check::failed(
            CONTROL_PLANE,
            Status::Error,
            message,
            "the controller writes it on first start: see `meshctl logs controller`".to_owned(),
        ),
    });
    checks
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
    let hint = "fix the object and `meshctl apply` it again, or `meshctl delete` it";
    model::configuration(found, objects.len(), hint)
}

#[cfg(test)]
mod tests {
    use super::*;

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
