//! Telemetry access logging at ztunnel: a namespace-wide Telemetry with
//! `accessLogging: [{disabled: true}]` stops the "connection complete" lines of that
//! namespace's workloads on both nodes' ztunnels; another namespace keeps its lines; a
//! selector stops the lines of the workload it picks only.

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
        .map(|node| node_lines(sb, node, ns))
        .sum()
}

/// The access log lines about workloads of `ns` in the ztunnel of `node`.
fn node_lines(sb: &Sandbox, node: &str, ns: &str) -> usize {
    let log = sb
        .logs(&Component::Ztunnel(node.to_string()))
        .unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("connection complete"))
        .filter(|l| {
            l.contains(&format!("namespace=\"{ns}\"")) || l.contains(&format!("namespace={ns} "))
        })
        .count()
}

/// One request from loud's client, once its line is on the client's node: whether the
/// server's node wrote a line about it too (written before the client's: the close travels
/// from the server to the client).
fn loud_request_logged_by_server(sb: &Sandbox, url: &str) -> bool {
    let (client, server) = (
        node_lines(sb, "node1", "loud"),
        node_lines(sb, "node2", "loud"),
    );
    sb.http("loud/client", url)
        .expect("a request in the loud namespace");
    assert!(
        eventually(SETTLE, || node_lines(sb, "node1", "loud") > client),
        "the client's line on node1"
    );
    node_lines(sb, "node2", "loud") > server
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

    // A selector picks one workload of loud: its server stops writing lines on its node,
    // while its client keeps writing its own.
    assert!(
        loud_request_logged_by_server(&sb, &url),
        "the server logs before the switch"
    );
    sb.apply(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: quiet-server, namespace: loud}\n\
         spec:\n  selector: {matchLabels: {app: server}}\n  accessLogging: [{disabled: true}]\n",
    )
    .expect("the selector Telemetry");
    assert!(
        eventually(SETTLE, || !loud_request_logged_by_server(&sb, &url)),
        "the selected server stops writing lines"
    );
    for _ in 0..5 {
        assert!(
            !loud_request_logged_by_server(&sb, &url),
            "no line from the selected server"
        );
    }
}
