//! What the sandbox's verbs print: kubectl-like tables (the shared `operator::table`), the
//! summary of `up`, the controller's view, tap lines; `check`, findings, `proxy-status`,
//! `stat`, `routes` and `edges` print through `crate::operator`, alike in both modes.

use serde_json::json;

pub use crate::operator::table::table;

use crate::sandbox::host::procfs;
use crate::sandbox::model::cluster::{Cluster, Phase, Pod};
use crate::sandbox::model::control::{
    ADMIN_PORT, CONTROLLER_IDENTITY, ControlPlane, Layout, XDS_PORT,
};
use crate::sandbox::model::services::{ServiceView, services};

/// kubectl's AGE: 45s, 12m, 3h, 5d.
pub fn age(created: u64, now: u64) -> String {
    let s = now.saturating_sub(created);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn status(p: &Pod) -> &'static str {
    match p.phase {
        // A failing liveness probe: kubelet would be restarting the container; the sandbox
        // says so instead.
        Phase::Running if p.unhealthy => "Unhealthy",
        Phase::Running => "Running",
        Phase::Pending => "Pending",
        Phase::Failed => "Error",
    }
}

fn ready(p: &Pod) -> String {
    let total = p.containers.len();
    let n = if p.ready && p.phase == Phase::Running {
        total
    } else {
        0
    };
    format!("{n}/{total}")
}

/// A table of namespaced objects, `rows` given with their namespace: one
/// namespace's objects, or (`namespace` None) everyone's with a NAMESPACE
/// column first; kubectl's "No ... found." when there are none.
fn namespaced_table(
    namespace: Option<&str>,
    what: &str,
    header: &[&str],
    rows: Vec<(String, Vec<String>)>,
) -> String {
    if rows.is_empty() {
        return empty(namespace, what);
    }
    if namespace.is_some() {
        let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
        return table(header, &rows);
    }
    let header: Vec<&str> = std::iter::once("NAMESPACE")
        .chain(header.iter().copied())
        .collect();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(ns, row)| std::iter::once(ns).chain(row).collect())
        .collect();
    table(&header, &rows)
}

/// `get pods`.
pub fn pods(c: &Cluster, namespace: Option<&str>, now: u64) -> String {
    let rows = c
        .pods
        .values()
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .map(|p| {
            let restarts: u32 = p.containers.iter().map(|c| c.restarts).sum();
            let row = vec![
                p.name.clone(),
                ready(p),
                status(p).into(),
                restarts.to_string(),
                // As kubectl: no IP until the pod's network is set up.
                if p.network {
                    p.ip.to_string()
                } else {
                    "<none>".into()
                },
                p.node.clone(),
                age(p.created, now),
            ];
            (p.namespace.clone(), row)
        })
        .collect();
    let header = ["NAME", "READY", "STATUS", "RESTARTS", "IP", "NODE", "AGE"];
    namespaced_table(namespace, "pods", &header, rows)
}

/// `get pods -o json`: a Kubernetes `List` of Pod objects with status.
pub fn pods_json(c: &Cluster, namespace: Option<&str>) -> String {
    let items: Vec<_> = c
        .pods
        .values()
        .filter(|p| namespace.is_none_or(|ns| p.namespace == ns))
        .filter_map(|p| Some(crate::sandbox::host::state::pod_object(p, c.node(&p.node)?)))
        .collect();
    serde_json::to_string_pretty(&json!({"apiVersion": "v1", "kind": "List", "items": items}))
        .unwrap_or_default()
}

fn ports(s: &ServiceView) -> String {
    let v: Vec<String> = s
        .ports
        .iter()
        .map(|p| format!("{}/{}", p.port, p.protocol.to_uppercase()))
        .collect();
    if v.is_empty() {
        "<none>".into()
    } else {
        v.join(",")
    }
}

/// `get svc`.
pub fn svcs(c: &Cluster, namespace: Option<&str>, now: u64) -> String {
    let rows = services(c)
        .into_iter()
        .filter(|s| namespace.is_none_or(|ns| s.namespace == ns))
        .map(|s| {
            let created = c
                .find("Service", Some(&s.namespace), &s.name)
                .map(|a| a.created)
                .unwrap_or(now);
            let ip = s
                .cluster_ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "None".into());
            let row = vec![
                s.name.clone(),
                "ClusterIP".into(),
                ip,
                ports(&s),
                s.addresses.len().to_string(),
                age(created, now),
            ];
            (s.namespace, row)
        })
        .collect();
    let header = ["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "ENDPOINTS", "AGE"];
    namespaced_table(namespace, "services", &header, rows)
}

/// `get ns`.
pub fn namespaces(c: &Cluster, now: u64) -> String {
    let rows: Vec<Vec<String>> = c
        .of_kind("Namespace")
        .map(|a| {
            let labels = a.object.labels();
            let labels = if labels.is_empty() {
                "<none>".to_string()
            } else {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            vec![
                a.object.name.clone(),
                "Active".into(),
                labels,
                age(a.created, now),
            ]
        })
        .collect();
    table(&["NAME", "STATUS", "LABELS", "AGE"], &rows)
}

/// `get nodes`.
pub fn nodes(c: &Cluster, now: u64) -> String {
    let rows: Vec<Vec<String>> = c
        .nodes
        .iter()
        .map(|n| {
            let count = c.pods.values().filter(|p| p.node == n.name).count();
            vec![
                n.name.clone(),
                "Ready".into(),
                n.ip.to_string(),
                n.pod_cidr(),
                count.to_string(),
                age(c.created, now),
            ]
        })
        .collect();
    table(
        &["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR", "PODS", "AGE"],
        &rows,
    )
}

fn empty(namespace: Option<&str>, what: &str) -> String {
    match namespace {
        Some(ns) => format!("No {what} found in {ns} namespace.\n"),
        None => format!("No {what} found.\n"),
    }
}

/// `get controller`: where the control plane is and how its processes are.
pub fn controller(c: &ControlPlane, layout: &Layout) -> String {
    let mut out = format!(
        "controller {} in {}\n  admin    http://127.0.0.1:{} -> {}:{ADMIN_PORT}\n  xDS/CA   127.0.0.1:{} -> {}:{XDS_PORT}\n  root     {}\n  tokens   {}\n\n",
        c.ip,
        c.netns,
        c.admin_port,
        c.ip,
        c.xds_port,
        c.ip,
        layout.root_cert().display(),
        layout.tokens_dir().display(),
    );
    let rows: Vec<Vec<String>> = c
        .processes
        .iter()
        .map(|p| {
            let pid = p.process.filter(|p| procfs::alive(*p));
            vec![
                p.component.name(),
                if pid.is_some() { "Running" } else { "Stopped" }.into(),
                pid.map(|p| p.pid.to_string()).unwrap_or_else(|| "-".into()),
                p.log.display().to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["COMPONENT", "STATUS", "PID", "LOG"], &rows));
    out
}

/// `get controller -o json`.
pub fn controller_json(c: &ControlPlane, layout: &Layout) -> String {
    let components: Vec<serde_json::Value> = c
        .processes
        .iter()
        .map(|p| {
            let pid = p.process.filter(|p| procfs::alive(*p)).map(|p| p.pid);
            json!({
                "name": p.component.name(),
                "component": p.component,
                "running": pid.is_some(),
                "pid": pid,
                "netns": p.netns,
                "log": p.log,
                "command": p.argv,
            })
        })
        .collect();
    let value = json!({
        "ip": c.ip.to_string(),
        "netns": c.netns,
        "xds": format!("{}:{XDS_PORT}", c.ip),
        "admin_port": c.admin_port,
        "xds_port": c.xds_port,
        "admin_url": format!("http://127.0.0.1:{}", c.admin_port),
        "xds_addr": format!("127.0.0.1:{}", c.xds_port),
        "identity": CONTROLLER_IDENTITY,
        "root_cert": layout.root_cert(),
        "tokens_dir": layout.tokens_dir(),
        "tokens_file": layout.tokens_file(),
        "components": components,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// The summary printed at the end of `up`.
pub fn summary(c: &Cluster, now: u64) -> String {
    format!(
        "\nsandbox {} is up.\n\n{}\n{}\n{}",
        c.name,
        nodes(c, now),
        pods(c, None, now),
        svcs(c, None, now)
    )
}

/// One line of a tap stream, as `tap` shows it.
#[derive(Debug, PartialEq)]
pub enum TapLine {
    /// A request or connection: JSON as received, or `linkerd viz tap`-style text (`req ...`,
    /// `conn ...`).
    Event(String),
    /// A proxy dropped this many events for this tap.
    Dropped(u64),
    /// Not JSON: skipped.
    Unreadable,
}

/// Reads one line of a tap stream.
pub fn tap_line(line: &str, json: bool) -> TapLine {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return TapLine::Unreadable;
    };
    if let Some(n) = event["dropped"].as_u64() {
        return TapLine::Dropped(n);
    }
    if json {
        return TapLine::Event(line.to_owned());
    }
    let text = |key: &str| match event[key].as_str() {
        Some("") | None => "-".to_owned(),
        Some(value) => value.to_owned(),
    };
    if event["kind"] == "connection" {
        return TapLine::Event(connection_line(&event, text));
    }
    TapLine::Event(format!(
        "req {} {}{} status={} latency={:.1}ms route={} src={} dst={}.{} upstream={} flags={}",
        text("method"),
        text("authority"),
        text("path"),
        event["status"].as_u64().unwrap_or_default(),
        event["latency_ms"].as_f64().unwrap_or_default(),
        text("route"),
        text("source_identity"),
        text("destination_workload"),
        text("destination_namespace"),
        text("upstream"),
        text("response_flags"),
    ))
}

/// A connection event as text: phase (or `deny`), direction, addresses, identities, and
/// what it carried once closed.
fn connection_line(event: &serde_json::Value, text: impl Fn(&str) -> String) -> String {
    let denied = event["verdict"] == "deny";
    let mut line = format!(
        "conn {} {} {} -> {} src={} dst={} svc={} mtls={}",
        if denied {
            "deny"
        } else {
            event["phase"].as_str().unwrap_or("-")
        },
        text("direction"),
        text("source_address"),
        text("destination_address"),
        text("source_identity"),
        text("destination_identity"),
        text("destination_service"),
        event["mtls"].as_bool().unwrap_or(false),
    );
    if denied {
        line.push_str(&format!(" policy={}", text("policy")));
    }
    if event["phase"] == "close" {
        line.push_str(&format!(
            " sent={}B recv={}B duration={:.1}ms flags={}",
            event["bytes_sent"].as_u64().unwrap_or_default(),
            event["bytes_received"].as_u64().unwrap_or_default(),
            event["duration_ms"].as_f64().unwrap_or_default(),
            text("response_flags"),
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_lines_read_as_events_drops_or_nothing() {
        let line = r#"{"kind":"request","method":"GET","authority":"orders:8080","path":"/x","status":503,"latency_ms":1.25,"route":"","source_identity":"spiffe://cluster.local/ns/shop/sa/client","destination_workload":"orders-v1","destination_namespace":"shop","upstream":"10.244.1.2:8080","response_flags":"-"}"#;
        assert_eq!(
            tap_line(line, false),
            TapLine::Event(
                "req GET orders:8080/x status=503 latency=1.2ms route=- \
                 src=spiffe://cluster.local/ns/shop/sa/client dst=orders-v1.shop \
                 upstream=10.244.1.2:8080 flags=-"
                    .to_owned()
            )
        );
        assert_eq!(tap_line(line, true), TapLine::Event(line.to_owned()));
        assert_eq!(tap_line("{\"dropped\":7}", false), TapLine::Dropped(7));
        let closed = r#"{"kind":"connection","phase":"close","direction":"inbound","source_identity":"spiffe://cluster.local/ns/mesh/sa/client","source_address":"10.0.0.1:4000","destination_identity":"spiffe://cluster.local/ns/mesh/sa/default","destination_address":"10.0.0.2:8080","mtls":true,"verdict":"allow","bytes_sent":12,"bytes_received":34,"duration_ms":2.5,"response_flags":"-"}"#;
        assert_eq!(
            tap_line(closed, false),
            TapLine::Event(
                "conn close inbound 10.0.0.1:4000 -> 10.0.0.2:8080 \
                 src=spiffe://cluster.local/ns/mesh/sa/client \
                 dst=spiffe://cluster.local/ns/mesh/sa/default svc=- mtls=true \
                 sent=12B recv=34B duration=2.5ms flags=-"
                    .to_owned()
            )
        );
        let denied = r#"{"kind":"connection","phase":"open","direction":"inbound","source_address":"10.0.0.1:4000","destination_address":"10.0.0.2:8080","mtls":false,"verdict":"deny","policy":"mesh/deny-foe"}"#;
        assert_eq!(
            tap_line(denied, false),
            TapLine::Event(
                "conn deny inbound 10.0.0.1:4000 -> 10.0.0.2:8080 src=- dst=- svc=- mtls=false \
                 policy=mesh/deny-foe"
                    .to_owned()
            )
        );
        assert_eq!(tap_line("not json", false), TapLine::Unreadable);
    }

    #[test]
    fn namespaced_tables_add_the_namespace_column_only_across_namespaces() {
        let rows = || vec![("shop".to_string(), vec!["web".to_string(), "1".to_string()])];
        let header = ["NAME", "N"];
        assert_eq!(
            namespaced_table(Some("shop"), "pods", &header, rows()),
            "NAME   N\nweb    1\n"
        );
        assert_eq!(
            namespaced_table(None, "pods", &header, rows()),
            "NAMESPACE   NAME   N\nshop        web    1\n"
        );
        assert_eq!(
            namespaced_table(Some("x"), "pods", &header, Vec::new()),
            "No pods found in x namespace.\n"
        );
        assert_eq!(
            namespaced_table(None, "services", &header, Vec::new()),
            "No services found.\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(100, 145), "45s");
        assert_eq!(age(0, 600), "10m");
        assert_eq!(age(0, 3 * 3600), "3h");
        assert_eq!(age(0, 5 * 86_400), "5d");
        assert_eq!(age(10, 5), "0s");
    }
}
