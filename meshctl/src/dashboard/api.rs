//! The JSON the page reads: the latest refresh as one document (overview, graph,
//! certificates, findings) and one workload's or service's detail.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::graph::graph;
use super::sampler::{Shared, Snapshot};
use crate::operator::check::{CONFIGURATION, Check, Status};

/// The latest refresh as the page reads it.
pub fn snapshot(snapshot: &Snapshot) -> Value {
    let worst = |checks: &mut dyn Iterator<Item = &Check>| {
        checks.map(|c| c.status).max().unwrap_or(Status::Ok)
    };
    let mut groups: BTreeMap<&str, Vec<&Check>> = BTreeMap::new();
    for check in &snapshot.checks {
        groups.entry(check.group).or_default().push(check);
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|(group, checks)| {
            json!({"group": group, "status": worst(&mut checks.iter().copied()),
                   "checks": checks})
        })
        .collect();
    let status = match &snapshot.error {
        Some(_) => Status::Error,
        None => worst(&mut snapshot.checks.iter()),
    };
    let findings: Vec<&Check> = snapshot
        .checks
        .iter()
        .filter(|c| c.group == CONFIGURATION)
        .collect();
    json!({
        "at": snapshot.at,
        "window_seconds": snapshot.window_seconds,
        "took_ms": snapshot.took_ms,
        "error": snapshot.error,
        "status": status,
        "check_groups": groups,
        "namespaces": snapshot.namespaces,
        "deployments": snapshot.deployments,
        "services": snapshot.services,
        "graph": graph(
            &snapshot.deployments,
            &snapshot.edges,
            &snapshot.request_edges,
            snapshot.window_seconds
        ),
        "unreachable": snapshot.unreachable,
        "certificates": snapshot.certificates,
        "root": snapshot.root,
        "findings": findings,
    })
}

/// One Deployment's (`kind=deploy`) or Service's (`kind=svc`) detail: its row, its history,
/// its edges (a Deployment's) or routes (a Service's).
pub fn detail(shared: &Shared, params: &BTreeMap<String, String>) -> Result<Value, String> {
    let get = |key: &str| {
        params
            .get(key)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the query needs {key}="))
    };
    let (kind, namespace, name) = (get("kind")?, get("namespace")?, get("name")?);
    let snapshot = shared.snapshot();
    let rows = match kind.as_str() {
        "deploy" => &snapshot.deployments,
        "svc" => &snapshot.services,
        other => return Err(format!("kind={other}: use deploy or svc")),
    };
    let row = rows
        .iter()
        .find(|r| &r.namespace == namespace && &r.name == name);
    let side = |inbound: bool| -> Vec<_> {
        snapshot
            .edges
            .iter()
            .filter(|_| kind == "deploy")
            .filter(|e| match inbound {
                true => &e.destination_namespace == namespace && &e.destination == name,
                false => &e.source_namespace == namespace && &e.source == name,
            })
            .collect()
    };
    let routes = match kind.as_str() {
        "svc" => shared.routes(namespace, name),
        _ => None,
    };
    Ok(json!({
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "window_seconds": snapshot.window_seconds,
        "row": row,
        "history": shared.history(kind, namespace, name),
        "inbound": side(true),
        "outbound": side(false),
        "routes": routes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::check::{CONTROL_PLANE, NODE_PROXIES};

    #[test]
    fn one_failed_check_turns_the_overview_red_and_findings_are_the_configuration_group() {
        let mut snap = Snapshot {
            checks: vec![
                Check::ok(CONTROL_PLANE, "the controller is ready"),
                Check::ok(NODE_PROXIES, "the ztunnel of node1 is ready"),
                Check::failed(CONFIGURATION, Status::Warning, "a finding", "fix it"),
            ],
            ..Snapshot::default()
        };
        let page = snapshot(&snap);
        assert_eq!(page["status"], "warning");
        assert_eq!(page["findings"][0]["message"], "a finding");
        snap.checks.push(Check::failed(
            NODE_PROXIES,
            Status::Error,
            "the ztunnel of node2 is not running",
            "start it",
        ));
        let page = snapshot(&snap);
        assert_eq!(page["status"], "error");
        let groups: Vec<(&str, &str)> = page["check_groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["group"].as_str().unwrap(), g["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            groups,
            [
                ("configuration", "warning"),
                ("control plane", "ok"),
                ("node proxies", "error")
            ]
        );
        let down = Snapshot {
            error: Some("sandbox demo is not up".into()),
            ..Snapshot::default()
        };
        assert_eq!(snapshot(&down)["status"], "error");
    }
}
