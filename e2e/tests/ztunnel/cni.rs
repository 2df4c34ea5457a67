//! Capture at pod creation: the sandbox creates pods through the mesh's chained CNI plugin,
//! as a runtime does, so a pod in an ambient namespace is captured before its container
//! starts. Its very first connection — made by the container as its first action — is
//! carried over HBONE; a pod outside the mesh is not captured; deleting a pod runs CNI DEL,
//! which releases it.

use e2e::mesh::{captured, wait_captured, ztunnel_metrics};
use e2e::metrics::metric_sum;
use e2e::{Component, SETTLE, Sandbox, eventually};
use test_support::manifests::namespace;

use super::{APP_PORT, peer_authentication, up};

/// A pod whose container's first and only action is one request to the server at `server`.
fn starter(namespace: &str, name: &str, server: std::net::Ipv4Addr) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  nodeName: node1
  containers:
  - name: app
    command: [meshctl, app, curl, --fail, --timeout-ms, "5000", "http://{server}:{APP_PORT}/"]
---
"#
    )
}

/// The container log of pod `namespace/name`, once its command has written something.
fn first_output(sb: &Sandbox, namespace: &str, name: &str) -> String {
    let args: Vec<String> = ["logs", "-n", namespace, name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut text = String::new();
    eventually(SETTLE, || {
        text = sb
            .run(&args)
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr)
            })
            .unwrap_or_default();
        !text.trim().is_empty()
    });
    text
}

/// Connections the server's ztunnel accepted over HBONE from the identity of the `mesh`
/// namespace's default service account. (The source workload is not named: at a new pod's
/// first millisecond the controller has not published its address yet, so the server's
/// ztunnel knows the peer by its certificate only.)
fn hbone_connections(sb: &Sandbox) -> f64 {
    ztunnel_metrics(sb, "node2").map_or(0.0, |text| {
        metric_sum(
            &text,
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "destination"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/mesh/sa/default",
                ),
                ("connection_security_policy", "mutual_tls"),
            ],
        )
    })
}

#[test]
fn a_new_pods_first_connection_is_carried_over_hbone_and_del_releases_it() {
    // STRICT: the server's ztunnel refuses plaintext, so only a connection captured at the
    // client (and carried over HBONE) can succeed.
    let manifests = namespace("mesh", true)
        + &namespace("plain", false)
        + &peer_authentication("STRICT")
        + "---\n"
        + &e2e::manifests::echo_pod("mesh", "server", "node2", APP_PORT)
        + &e2e::manifests::idle_pod("mesh", "idle", "node1", "default");
    let sb = up(&manifests);
    wait_captured(&sb, "node2", &["mesh/server"]);
    wait_captured(&sb, "node1", &["mesh/idle"]);

    let server = sb.pod_ip("server").unwrap();
    sb.apply(&(starter("mesh", "early", server) + &starter("plain", "outside", server)))
        .expect("apply the starters");
    let early = first_output(&sb, "mesh", "early");
    let reply: serde_json::Value = serde_json::from_str(early.trim()).unwrap_or_default();
    assert_eq!(
        reply["pod"], "server",
        "the mesh pod's first request succeeded: {early}"
    );
    assert!(
        eventually(SETTLE, || hbone_connections(&sb) >= 1.0),
        "the server's ztunnel saw the mesh pod's first connection over HBONE:\n{}",
        ztunnel_metrics(&sb, "node2").unwrap_or_default()
    );
    let agent_log = sb.logs(&Component::NodeAgent("node1".into())).unwrap();
    assert!(
        agent_log
            .lines()
            .any(|l| l.contains("pod captured at creation (CNI)") && l.contains("Pod/mesh/early")),
        "captured through CNI ADD, not found later:\n{agent_log}"
    );
    // Outside the mesh: not captured, so STRICT refuses its plaintext.
    let outside = first_output(&sb, "plain", "outside");
    assert!(
        !agent_log.contains("Pod/plain/outside"),
        "the plain pod was left alone:\n{agent_log}"
    );
    assert!(
        serde_json::from_str::<serde_json::Value>(outside.trim()).is_err(),
        "STRICT refused the plain pod's plaintext: {outside}"
    );

    // Deleting a running mesh pod: CNI DEL releases it from the agent and the proxy.
    sb.delete(&e2e::manifests::idle_pod(
        "mesh", "idle", "node1", "default",
    ))
    .expect("delete the idle pod");
    assert!(
        eventually(SETTLE, || !captured(&sb, "node1").contains("mesh/idle")),
        "released: {:?}",
        captured(&sb, "node1")
    );
    let agent_log = sb.logs(&Component::NodeAgent("node1".into())).unwrap();
    assert!(
        agent_log
            .lines()
            .any(|l| l.contains("pod sandbox deleted; releasing it") && l.contains("Pod/mesh/idle")),
        "released on CNI DEL:\n{agent_log}"
    );

    // Fail closed: with the node's agent away, a new mesh pod's CNI ADD fails (the sandbox
    // retries it, as a runtime does, then gives up) and the pod never runs uncaptured.
    let agent = Component::NodeAgent("node1".into());
    sb.stop(&agent).unwrap();
    let out = sb
        .apply_output(&e2e::manifests::idle_pod(
            "mesh", "late", "node1", "default",
        ))
        .expect("apply while the agent is away");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("warning: pod mesh/late not started") && said.contains("CNI ADD"),
        "apply says why the pod did not start:\n{said}"
    );
    let late = sb.pod("late").unwrap();
    assert_eq!(late.phase, "Failed", "{late:?}");
    assert!(late.ip.is_unspecified(), "no IP published: {late:?}");
    sb.start(&agent).unwrap();
}
