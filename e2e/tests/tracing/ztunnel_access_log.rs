//! Telemetry access logging at ztunnel: a namespace-wide Telemetry with
//! `accessLogging: [{disabled: true}]` stops the "connection complete" lines of that
//! namespace's workloads on both nodes' ztunnels; another namespace keeps its lines.

use e2e::manifests::{echo_pod, idle_pod};
use e2e::mesh::{captured, wait_ready};
use e2e::{Component, SETTLE, Sandbox, eventually};
use test_support::manifests::namespace;

const PORT: u16 = 8080;

/// A client (node1), an echo server (node2) and Service `echo` in `ns`, in the mesh.
fn pair(ns: &str) -> String {
    namespace(ns, true)
        + &idle_pod(ns, "client", "node1", "default")
        + &echo_pod(ns, "server", "node2", PORT)
        + &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: {ns}}}\n\
             spec:\n  selector: {{app: server}}\n  ports: [{{name: http, port: {PORT}}}]\n---\n"
        )
}

/// The access log lines about workloads of `ns` in both ztunnels' logs.
fn lines_of(sb: &Sandbox, ns: &str) -> usize {
    ["node1", "node2"]
        .iter()
        .map(|node| {
            let log = sb
                .logs(&Component::Ztunnel(node.to_string()))
                .unwrap_or_default();
            log.lines()
                .filter(|l| l.contains("connection complete"))
                .filter(|l| {
                    l.contains(&format!("namespace=\"{ns}\""))
                        || l.contains(&format!("namespace={ns} "))
                })
                .count()
        })
        .sum()
}

#[test]
fn a_namespace_wide_switch_stops_only_that_namespaces_lines() {
    let manifests = pair("quiet")
        + &pair("loud")
        + "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
           metadata: {name: no-access-log, namespace: quiet}\n\
           spec: {accessLogging: [{disabled: true}]}\n";
    let sb = Sandbox::up(&manifests).expect("sandbox up");
    wait_ready(&sb);
    // Every pod captured: a quiet request must cross both ztunnels, or its missing lines
    // would prove nothing.
    let all = |node: &str, pod: &str| {
        ["quiet", "loud"]
            .iter()
            .all(|ns| captured(&sb, node).contains(&format!("{ns}/{pod}")))
    };
    assert!(
        eventually(SETTLE, || all("node1", "client") && all("node2", "server")),
        "pods captured: node1 {:?}, node2 {:?}",
        captured(&sb, "node1"),
        captured(&sb, "node2")
    );

    let url = format!("http://echo:{PORT}/");
    // The loud namespace logs both ends of a connection once its request is answered.
    assert!(
        eventually(SETTLE, || sb.http("loud/client", &url).is_ok()
            && lines_of(&sb, "loud") >= 2),
        "loud's connections are logged ({} lines)",
        lines_of(&sb, "loud")
    );
    for _ in 0..5 {
        sb.http("quiet/client", &url)
            .expect("a request in the quiet namespace");
    }
    // Lines are written as connections close: a loud request after the quiet ones shows
    // when theirs would have been written.
    let loud = lines_of(&sb, "loud");
    sb.http("loud/client", &url)
        .expect("a request in the loud namespace");
    assert!(
        eventually(SETTLE, || lines_of(&sb, "loud") >= loud + 2),
        "the loud request's lines"
    );
    assert_eq!(
        lines_of(&sb, "quiet"),
        0,
        "no line about the quiet namespace's workloads"
    );
}
