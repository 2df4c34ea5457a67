//! `meshctl check`: whether the sandbox's mesh works, group by group, each failure with a
//! hint, as `linkerd check` does: the controller and its CA root, every node's ztunnel, every
//! waypoint, and what the controller makes of the applied objects.

use std::time::SystemTime;

use hbone::cert::{certificates_from_pem, serial_hex};

use super::findings;
use super::proxies::{self, Proxy};
use super::sandbox::Sandbox;
use super::system::controller_get;
use crate::operator::check::{
    self as model, CONTROL_PLANE, Check, NODE_PROXIES, Status, WAYPOINTS, root_check,
    root_validity, rotation_check,
};
use crate::sandbox::host::{kubeproxy, procfs};
use crate::sandbox::model::cluster::Phase;
use crate::sandbox::model::control::{Component, SystemProcess};

/// How to replace the sandbox's root.
const ROTATE: &str = "rotate the root without a failed request: `meshctl ca rotate-root`, or \
                      `meshctl ca replace FOLDER` with an intermediate in Istio's plug-in \
                      layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)";

/// Runs every check against `sb`, in the order they are shown.
pub fn run(sb: &Sandbox) -> Vec<Check> {
    let mut checks = control_plane(sb);
    let roots = current_roots(sb);
    checks.extend(node_proxies(sb, &roots));
    checks.extend(probe_rules(sb));
    checks.extend(waypoints(sb, &roots));
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
    let rotation = controller_get(&control.netns, "/debug/ca")
        .ok()
        .filter(|answer| answer.status == 200)
        .and_then(|answer| serde_json::from_slice(&answer.body).ok());
    checks.extend(rotation.as_ref().and_then(rotation_check));
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

/// The serial numbers of the roots the controller publishes (empty when they cannot be read;
/// the control plane check says why).
fn current_roots(sb: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(sb.layout().root_cert())
        .ok()
        .and_then(|pem| certificates_from_pem(&pem, "CA roots").ok())
        .into_iter()
        .flatten()
        .filter_map(|root| serial_hex(&root))
        .collect()
}

fn node_proxies(sb: &Sandbox, roots: &[String]) -> Vec<Check> {
    let Ok(control) = sb.control() else {
        return Vec::new();
    };
    sb.cluster
        .nodes
        .iter()
        .map(|node| {
            let running = running(control.find(&Component::Ztunnel(node.name.clone())));
            match proxies::ztunnel(sb, &node.name).ok().filter(|_| running) {
                Some(proxy) => ztunnel_check(&node.name, &proxy, roots),
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

/// The node agent's chain SNATing the node's health probes (istio-cni's name).
const PROBE_CHAIN: &str = "ISTIO_POSTRT";

/// The probe SNAT rules `nat` (`iptables-save -t nat`) holds, or `None` when the chain is not
/// hooked into `POSTROUTING`.
fn probe_rules_of(nat: &str) -> Option<Vec<&str>> {
    let jump = format!("-A POSTROUTING -j {PROBE_CHAIN}");
    let rule = format!("-A {PROBE_CHAIN} ");
    let lines: Vec<&str> = nat.lines().map(str::trim_end).collect();
    lines.iter().any(|l| *l == jump).then(|| {
        lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&rule))
            .collect()
    })
}

/// Running pods of `node` that the mesh captures (namespace labelled ambient, no opt-out),
/// as `namespace/name` and IP.
fn ambient_pods(sb: &Sandbox, node: &str) -> Vec<(String, std::net::Ipv4Addr)> {
    const LABEL: &str = "istio.io/dataplane-mode";
    let ambient = |ns: &str| {
        sb.cluster
            .find("Namespace", None, ns)
            .is_some_and(|n| n.object.labels().get(LABEL).map(String::as_str) == Some("ambient"))
    };
    sb.cluster
        .pods
        .values()
        .filter(|p| p.node == node && p.phase == Phase::Running)
        .filter(|p| p.labels.get(LABEL).map(String::as_str) != Some("none"))
        .filter(|p| ambient(&p.namespace))
        .map(|p| (p.key(), p.ip))
        .collect()
}

/// Per node whose agent runs: whether the node keeps the rule that SNATs its health probes of
/// its ambient pods to 169.254.7.127 (without it, HTTP probes of those pods fail under STRICT).
fn probe_rules(sb: &Sandbox) -> Vec<Check> {
    let Ok(control) = sb.control() else {
        return Vec::new();
    };
    let hint = |node: &str| {
        format!(
            "kubelet's HTTP probes of ambient pods on {node} reach the proxy, which STRICT peer \
             authentication refuses: restart the agent (`meshctl restart node-agent --node \
             {node}`) and see `meshctl logs node-agent --node {node}`"
        )
    };
    sb.cluster
        .nodes
        .iter()
        .filter(|node| running(control.find(&Component::NodeAgent(node.name.clone()))))
        .map(|node| {
            let nat = match kubeproxy::nat_table(&sb.tools, node) {
                Ok(nat) => nat,
                Err(e) => {
                    return Check::failed(
                        NODE_PROXIES,
                        Status::Warning,
                        e.to_string(),
                        hint(&node.name),
                    );
                }
            };
            let Some(rules) = probe_rules_of(&nat) else {
                let message = format!("the probe SNAT rule of {} is missing", node.name);
                return Check::failed(NODE_PROXIES, Status::Warning, message, hint(&node.name));
            };
            let missing: Vec<String> = ambient_pods(sb, &node.name)
                .into_iter()
                .filter(|(_, ip)| !rules.iter().any(|r| r.contains(&format!("-d {ip}/32 "))))
                .map(|(key, _)| key)
                .collect();
            if missing.is_empty() {
                let message = format!(
                    "{} SNATs its health probes of {} captured pod addresses",
                    node.name,
                    rules.len()
                );
                Check::ok(NODE_PROXIES, message)
            } else {
                let message = format!(
                    "the probe SNAT rule of {} lacks ambient pods: {}",
                    node.name,
                    missing.join(", ")
                );
                Check::failed(NODE_PROXIES, Status::Warning, message, hint(&node.name))
            }
        })
        .collect()
}

/// A running ztunnel: ready, and every certificate it holds valid and issued by a current root.
fn ztunnel_check(node: &str, proxy: &Proxy, roots: &[String]) -> Check {
    let logs = format!("see `meshctl logs ztunnel --node {node}`");
    if let Err(reason) = proxies::ready(proxy) {
        let message = format!("the ztunnel of {node} is not ready: {reason}");
        return Check::failed(NODE_PROXIES, Status::Error, message, logs);
    }
    let dump = match proxies::config_dump(proxy) {
        Ok(dump) => dump,
        Err(e) => return Check::failed(NODE_PROXIES, Status::Error, e.to_string(), logs),
    };
    match certificate_problems(&dump, roots) {
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

/// How many certificates of a proxy's config dump are valid, and what is wrong with the others:
/// failed, expired, or not issued by one of `roots` (the controller's current roots, by serial;
/// not judged when empty).
fn certificate_problems(dump: &serde_json::Value, roots: &[String]) -> (usize, Vec<String>) {
    let mut valid = 0;
    let mut problems = Vec::new();
    for entry in &crate::operator::dump_certificates::certificates(dump) {
        let identity = entry["identity"].as_str().unwrap_or("?");
        let cert = &entry["certificate"];
        let issuer = cert["root_serial"].as_str();
        match entry["state"].as_str() {
            Some("failed") => problems.push(format!(
                "{identity}: {}",
                entry["error"].as_str().unwrap_or("failed")
            )),
            _ if cert["expired"] == true => problems.push(format!("{identity}: expired")),
            // Pending: asked for, not yet issued; readiness covers it.
            _ if !cert.is_object() => {}
            _ if roots.is_empty() => valid += 1,
            _ => match issuer {
                Some(serial) if roots.iter().any(|r| r == serial) => valid += 1,
                Some(serial) => problems.push(format!(
                    "{identity}: issued under root {serial}, which the controller no longer \
                     publishes"
                )),
                None => problems.push(format!("{identity}: no root of its trust bundle issued it")),
            },
        }
    }
    (valid, problems)
}

fn waypoints(sb: &Sandbox, roots: &[String]) -> Vec<Check> {
    proxies::waypoints(sb)
        .iter()
        .map(|(proxy, namespace, pod)| {
            let what = format!("the {}", proxy.name);
            let logs = format!("see `meshctl logs {pod} -n {namespace}`");
            if let Err(reason) = proxies::ready(proxy) {
                let message = format!("{what} is not ready: {reason}");
                return Check::failed(WAYPOINTS, Status::Error, message, logs);
            }
            let problems = proxies::config_dump(proxy)
                .map(|dump| certificate_problems(&dump, roots).1)
                .unwrap_or_else(|e| vec![e.to_string()]);
            if problems.is_empty() {
                Check::ok(WAYPOINTS, format!("{what} is ready, its certificate valid"))
            } else {
                let message = format!("{what} holds bad certificates: {}", problems.join("; "));
                Check::failed(WAYPOINTS, Status::Error, message, logs)
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
    fn probe_rules_count_only_when_hooked() {
        let hooked = "*nat\n:ISTIO_POSTRT - [0:0]\n-A POSTROUTING -j ISTIO_POSTRT\n\
                      -A ISTIO_POSTRT -d 10.244.1.2/32 -p tcp -m owner --socket-exists -j SNAT \
                      --to-source 169.254.7.127\nCOMMIT\n";
        assert_eq!(probe_rules_of(hooked).map(|r| r.len()), Some(1));
        let unhooked = "*nat\n:ISTIO_POSTRT - [0:0]\nCOMMIT\n";
        assert_eq!(probe_rules_of(unhooked), None);
        assert_eq!(probe_rules_of(""), None);
    }

    #[test]
    fn failed_expired_and_foreign_certificates_are_named_pending_ones_are_not_counted() {
        let dump = serde_json::json!({"certificates": [
            {"identity": "spiffe://cluster.local/ns/a/sa/ok", "state": "available",
             "certificate": {"expired": false, "root_serial": "aa"}},
            {"identity": "spiffe://cluster.local/ns/a/sa/retired", "state": "available",
             "certificate": {"expired": false, "root_serial": "bb"}},
            {"identity": "spiffe://cluster.local/ns/a/sa/stray", "state": "available",
             "certificate": {"expired": false, "root_serial": null}},
            {"identity": "spiffe://cluster.local/ns/a/sa/old", "state": "refreshing",
             "certificate": {"expired": true}},
            {"identity": "spiffe://cluster.local/ns/a/sa/bad", "state": "failed",
             "error": "CA refused", "certificate": null},
            {"identity": "spiffe://cluster.local/ns/a/sa/new", "state": "pending",
             "certificate": null},
        ]});
        let (valid, problems) = certificate_problems(&dump, &["aa".to_owned()]);
        assert_eq!(valid, 1);
        assert_eq!(
            problems,
            [
                "spiffe://cluster.local/ns/a/sa/retired: issued under root bb, which the \
                 controller no longer publishes",
                "spiffe://cluster.local/ns/a/sa/stray: no root of its trust bundle issued it",
                "spiffe://cluster.local/ns/a/sa/old: expired",
                "spiffe://cluster.local/ns/a/sa/bad: CA refused"
            ]
        );
        // Without the controller's roots, the issuer is not judged.
        assert_eq!(certificate_problems(&dump, &[]).0, 3);
    }
}
