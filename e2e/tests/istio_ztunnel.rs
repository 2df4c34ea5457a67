//! Istio's own ztunnel as the node proxy of sandbox nodes (`meshctl up --node-proxy`), driven
//! by the mesh's controller (xDS and CA) and node agent (ZDS), beside the mesh's own ztunnel
//! and waypoint. Runs when `ISTIO_ZTUNNEL_BIN` names a binary (docs/interop.md says how to
//! obtain one); otherwise each test says it was skipped and passes.

#[path = "ztunnel/sniffer.rs"]
mod sniffer;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use e2e::manifests::{echo_pod, idle_pod, service_account};
use e2e::mesh::{get_json, marker, wait_captured, wait_ready, ztunnel_pid};
use e2e::{Options, SETTLE, Sandbox, eventually, json};
use sniffer::Sniffer;
use test_support::manifests::namespace;

/// Names the Istio ztunnel binary to run.
const BINARY_ENV: &str = "ISTIO_ZTUNNEL_BIN";
/// The echo servers' port.
const APP_PORT: u16 = 8080;
/// HBONE's port.
const HBONE_PORT: u16 = 15008;
/// The node whose proxy is Istio's in the mixed cluster (node1 keeps the mesh's own).
const ISTIO_NODE: &str = "node2";

/// The Istio ztunnel binary, or `None` after saying the test is skipped.
fn istio_ztunnel(test: &str) -> Option<String> {
    match std::env::var(BINARY_ENV) {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            eprintln!(
                "{test}: skipped: {BINARY_ENV} is not set (the path of an Istio ztunnel binary; \
                 docs/interop.md says how to build one)"
            );
            None
        }
    }
}

/// Asserts that `node`'s proxy process runs the binary at `path` (and not the mesh's own).
fn assert_node_proxy(sb: &Sandbox, node: &str, path: &str) {
    let pid = ztunnel_pid(sb, node).unwrap_or_else(|| panic!("no node proxy on {node}"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the proxy's executable");
    let want = std::fs::canonicalize(path).expect("the Istio ztunnel binary");
    assert_eq!(exe, want, "the node proxy of {node}");
}

/// Namespace `mesh` (ambient): an echo server and a client on each node, and an intruder (a
/// service account no policy allows) on each node; `outside` (not ambient): a plaintext
/// client.
fn mixed_manifests() -> String {
    let mut m = namespace("mesh", true)
        + &namespace("outside", false)
        + &service_account("mesh", "client")
        + &service_account("mesh", "intruder");
    for (node, side) in [("node1", "a"), ("node2", "b")] {
        m += &echo_pod("mesh", &format!("server-{side}"), node, APP_PORT);
        m += &idle_pod("mesh", &format!("client-{side}"), node, "client");
        m += &idle_pod("mesh", &format!("intruder-{side}"), node, "intruder");
    }
    m + &idle_pod("outside", "outsider", "node1", "default")
}

/// GETs `path` from `server_ip` in `client`: the echo's reply, or the failure as text.
fn get(
    sb: &Sandbox,
    client: &str,
    server_ip: Ipv4Addr,
    path: &str,
) -> Result<serde_json::Value, String> {
    get_json(sb, client, &format!("http://{server_ip}:{APP_PORT}{path}"))
}

/// Requests from `client` to `server` carry the marker only inside HBONE: the capture on the
/// fabric sees no other port between the two pods and never the marker in clear; the server
/// sees the client's own address.
fn assert_hbone_between(sb: &Sandbox, sniffer: &Sniffer, client: &str, server: &str) {
    sniffer.clear();
    let client_ip = sb.pod_ip(client).unwrap();
    let server_ip = sb.pod_ip(server).unwrap();
    let secret = marker(client);
    sniffer.watch(&secret);
    let reply = get(
        sb,
        &format!("mesh/{client}"),
        server_ip,
        &format!("/{secret}"),
    )
    .unwrap_or_else(|e| panic!("{client} → {server}: {e}"));
    assert_eq!(reply["path"], format!("/{secret}"));
    assert!(
        reply["client"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{client_ip}:")),
        "{server} saw {}, the client is {client_ip}",
        reply["client"]
    );
    sniffer.sync();
    assert_eq!(
        sniffer.server_ports(client_ip, server_ip),
        BTreeSet::from([HBONE_PORT]),
        "{client} → {server}: only HBONE between the pods"
    );
    assert!(
        !sniffer.saw(&secret),
        "{client} → {server}: the request crossed in clear"
    );
}

/// One node with the mesh's ztunnel, one with Istio's: both capture their pods, HBONE works
/// both ways with the source address kept, an L4 AuthorizationPolicy is enforced by each
/// side's inbound against identities the other side presented, and STRICT refuses plaintext
/// on both.
#[test]
fn a_mixed_cluster_carries_and_polices_traffic_both_ways() {
    let Some(istio) = istio_ztunnel("a_mixed_cluster_carries_and_polices_traffic_both_ways") else {
        return;
    };
    let options = Options {
        node_proxies: vec![format!("{ISTIO_NODE}={istio}")],
        ..Options::default()
    };
    let sb = Sandbox::up_with(&mixed_manifests(), options).expect("sandbox up");
    wait_ready(&sb);
    assert_node_proxy(&sb, ISTIO_NODE, &istio);
    let own = ztunnel_pid(&sb, "node1").expect("node1's proxy");
    let own_exe = std::fs::read_link(format!("/proc/{own}/exe")).unwrap();
    assert!(own_exe.ends_with("ztunnel") && own_exe != std::fs::canonicalize(&istio).unwrap());
    wait_captured(
        &sb,
        "node1",
        &["mesh/client-a", "mesh/intruder-a", "mesh/server-a"],
    );
    wait_captured(
        &sb,
        "node2",
        &["mesh/client-b", "mesh/intruder-b", "mesh/server-b"],
    );
    let ip = |pod: &str| sb.pod_ip(pod).unwrap();
    let reaches = |client: &str, server: &str| get(&sb, client, ip(server), "/").is_ok();
    assert!(
        eventually(SETTLE, || reaches("mesh/client-a", "server-b")
            && reaches("mesh/client-b", "server-a")),
        "the clients reach the servers across the two kinds of node proxy"
    );

    let sniffer = Sniffer::start(&sb.netns_path("fabric")).expect("capture on the fabric");
    assert_hbone_between(&sb, &sniffer, "client-a", "server-b");
    assert_hbone_between(&sb, &sniffer, "client-b", "server-a");

    // `meshctl check` reads Istio's node proxy too: ready, and the certificates of its three
    // pods issued by the controller's root.
    let mut report = String::new();
    let checked = eventually(SETTLE, || {
        let out = sb.command().arg("check").output().expect("meshctl check");
        report = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
            && report.contains(
                "the ztunnel of node2 is ready, config synced, 3 workload certificates valid",
            )
    });
    assert!(checked, "meshctl check:\n{report}");

    // Only `client` may call the servers: each inbound checks the identity the other kind of
    // proxy presented for its pod.
    sb.apply(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: clients-only, namespace: mesh}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/client"]}}]
"#,
    )
    .unwrap();
    assert!(
        eventually(SETTLE, || !reaches("mesh/intruder-a", "server-b")
            && !reaches("mesh/intruder-b", "server-a")),
        "intruders are refused by both kinds of inbound"
    );
    assert!(
        reaches("mesh/client-a", "server-b"),
        "ours → Istio's, allowed"
    );
    assert!(
        reaches("mesh/client-b", "server-a"),
        "Istio's → ours, allowed"
    );

    // Plaintext from outside the mesh: admitted while PERMISSIVE, refused once STRICT.
    sb.delete("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: clients-only, namespace: mesh}\n")
        .unwrap();
    assert!(
        eventually(SETTLE, || reaches("outside/outsider", "server-b")),
        "plaintext admitted under PERMISSIVE"
    );
    sb.apply("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n")
        .unwrap();
    assert!(
        eventually(SETTLE, || !reaches("outside/outsider", "server-b")
            && !reaches("outside/outsider", "server-a")),
        "plaintext refused under STRICT by both kinds of node proxy"
    );
    assert!(
        reaches("mesh/client-a", "server-b"),
        "mutual TLS still admitted"
    );
    assert!(
        reaches("mesh/client-b", "server-a"),
        "mutual TLS still admitted"
    );
}

/// A namespace with the mesh's waypoint: a client on Istio's node reaches a Service bound to
/// the waypoint through it (the waypoint's HTTPRoute adds a header the server sees).
#[test]
fn istios_ztunnel_sends_service_traffic_through_the_meshs_waypoint() {
    let Some(istio) =
        istio_ztunnel("istios_ztunnel_sends_service_traffic_through_the_meshs_waypoint")
    else {
        return;
    };
    let manifests = namespace("wp", true)
        + r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: wp}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: wp, labels: {istio.io/use-waypoint: waypoint}}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: wp}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {add: [{name: x-through, value: waypoint}]}
    backendRefs: [{name: web, port: 80}]
---
"# + &echo_pod("wp", "web", "node1", APP_PORT)
        + &idle_pod("wp", "client", ISTIO_NODE, "default");
    let options = Options {
        node_proxies: vec![format!("{ISTIO_NODE}={istio}")],
        ..Options::default()
    };
    let sb = Sandbox::up_with(&manifests, options).expect("sandbox up");
    wait_ready(&sb);
    assert_node_proxy(&sb, ISTIO_NODE, &istio);
    let mut last = String::new();
    let through = eventually(SETTLE, || {
        match sb.try_http("wp/client", "http://web/", 5000) {
            Ok(out) if out.status.success() => {
                let reply = json(&String::from_utf8_lossy(&out.stdout));
                last = reply["headers"].to_string();
                reply["headers"]["x-through"] == "waypoint"
            }
            Ok(out) => {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    assert!(
        through,
        "the request never came through the waypoint: {last}"
    );
}

/// Every node runs Istio's ztunnel: pods on both are captured and reach each other over HBONE.
#[test]
fn istios_ztunnel_on_every_node_carries_traffic_between_them() {
    let Some(istio) = istio_ztunnel("istios_ztunnel_on_every_node_carries_traffic_between_them")
    else {
        return;
    };
    let manifests = namespace("mesh", true)
        + &service_account("mesh", "client")
        + &echo_pod("mesh", "server-b", "node2", APP_PORT)
        + &idle_pod("mesh", "client-a", "node1", "client");
    let options = Options {
        node_proxies: vec![istio.clone()],
        ..Options::default()
    };
    let sb = Sandbox::up_with(&manifests, options).expect("sandbox up");
    wait_ready(&sb);
    for node in ["node1", "node2"] {
        assert_node_proxy(&sb, node, &istio);
    }
    wait_captured(&sb, "node1", &["mesh/client-a"]);
    wait_captured(&sb, "node2", &["mesh/server-b"]);
    let server = sb.pod_ip("server-b").unwrap();
    assert!(
        eventually(SETTLE, || get(&sb, "mesh/client-a", server, "/").is_ok()),
        "client-a reaches server-b"
    );
    let sniffer = Sniffer::start(&sb.netns_path("fabric")).expect("capture on the fabric");
    assert_hbone_between(&sb, &sniffer, "client-a", "server-b");
}
