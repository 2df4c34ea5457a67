//! Linkerd's authorization policy enforced by ztunnel: a Server guards one port of a pod with
//! two, AuthorizationPolicies admit clients by mesh identity or by network, the default
//! inbound policy annotation governs the other port, and an invalid edit keeps the last good
//! version. Clients: two service accounts in the mesh, and a plain pod outside it.

use std::net::Ipv4Addr;

use e2e::manifests::{idle_pod, service_account};
use e2e::mesh::{get_json, wait_captured, ztunnel_dump};
use e2e::{SETTLE, Sandbox, eventually};
use test_support::manifests::namespace;

/// The port the Server guards.
const GUARDED: u16 = 8080;
/// The port no Server selects.
const OPEN: u16 = 9090;

/// The server pod: one echo per port, both declared (Linkerd considers only declared ports).
fn server_pod() -> String {
    let echo = |name: &str, port: u16| {
        format!(
            "  - name: {name}\n    command: [meshctl, app, http-echo, --port, \"{port}\"]\n    ports: [{{name: {name}, containerPort: {port}}}]\n"
        )
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: mesh, labels: {{app: server}}}}\nspec:\n  nodeName: node2\n  containers:\n{}{}---\n",
        echo("web", GUARDED),
        echo("admin", OPEN)
    )
}

/// The Server on the guarded port, and a policy admitting the `allowed` service account.
const POLICY: &str = r#"apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {name: web, namespace: mesh}
spec:
  podSelector: {matchLabels: {app: server}}
  port: 8080
  proxyProtocol: HTTP/1
---
apiVersion: policy.linkerd.io/v1alpha1
kind: MeshTLSAuthentication
metadata: {name: friends, namespace: mesh}
spec:
  identities: ["allowed.mesh.serviceaccount.identity.linkerd.cluster.local"]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-friends, namespace: mesh}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web}
  requiredAuthenticationRefs:
  - {group: policy.linkerd.io, kind: MeshTLSAuthentication, name: friends}
---
"#;

/// The mesh namespace with a default inbound policy, or none.
fn mesh_namespace(policy: Option<&str>) -> String {
    match policy {
        None => namespace("mesh", true),
        Some(p) => format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mesh\n  labels: {{istio.io/dataplane-mode: ambient}}\n  annotations: {{config.linkerd.io/default-inbound-policy: {p}}}\n---\n"
        ),
    }
}

fn reaches(sb: &Sandbox, client: &str, server: Ipv4Addr, port: u16) -> bool {
    get_json(sb, client, &format!("http://{server}:{port}/linkerd")).is_ok()
}

#[test]
fn linkerd_servers_authorizations_and_default_policies_are_enforced() {
    let manifests = mesh_namespace(None)
        + &namespace("outside", false)
        + &service_account("mesh", "allowed")
        + &service_account("mesh", "other")
        + &server_pod()
        + &idle_pod("mesh", "friend", "node1", "allowed")
        + &idle_pod("mesh", "foe", "node1", "other")
        + &idle_pod("outside", "stranger", "node1", "default")
        + POLICY;
    let sb = super::up(&manifests);
    wait_captured(&sb, "node1", &["mesh/foe", "mesh/friend"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    let server = sb.pod_ip("server").unwrap();
    let on = |client: &str, port: u16| reaches(&sb, client, server, port);

    // The Server admits the authorized identity only; the other port stays open to all.
    assert!(
        eventually(SETTLE, || on("mesh/friend", GUARDED)),
        "the authorized identity reaches the guarded port"
    );
    assert!(
        eventually(SETTLE, || !on("mesh/foe", GUARDED)),
        "another identity is refused"
    );
    assert!(!on("outside/stranger", GUARDED), "a plain client is refused");
    for client in ["mesh/foe", "outside/stranger", "mesh/friend"] {
        assert!(on(client, OPEN), "{client} reaches the port no Server selects");
    }
    assert!(
        eventually(SETTLE, || ztunnel_dump(&sb, "node2")
            .to_string()
            .contains("linkerd_server_web")),
        "the Server's policy shows in the server node's config dump"
    );

    // An invalid edit is reported with its field (`meshctl apply` judges it on its own), and
    // the controller keeps the last good version in force.
    let broken = POLICY.replace(
        "[\"allowed.mesh.serviceaccount.identity.linkerd.cluster.local\"]",
        "[\"allowed.mesh\"]",
    );
    let refused = sb.apply(&broken).expect_err("apply reports the invalid object");
    let text = refused.to_string();
    for expected in ["MeshTLSAuthentication mesh/friends", "spec.identities[0]"] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    assert!(on("mesh/friend", GUARDED), "the last good version admits");
    assert!(!on("mesh/foe", GUARDED), "the last good version refuses");

    // A NetworkAuthentication admits a plain client by its address.
    let stranger = sb.pod_ip("stranger").unwrap();
    let by_network = format!(
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {{name: stranger-net, namespace: mesh}}
spec:
  networks: [{{cidr: "{stranger}/32"}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: web-stranger, namespace: mesh}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: web}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: NetworkAuthentication, name: stranger-net}}
"#
    );
    sb.apply(&by_network).unwrap();
    assert!(
        eventually(SETTLE, || on("outside/stranger", GUARDED)),
        "the plain client's network is admitted"
    );
    assert!(!on("mesh/foe", GUARDED), "other clients are still refused");

    // Deleting the authorization refuses the client it admitted: the Server still guards.
    sb.delete(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: web-friends, namespace: mesh}\n",
    )
    .unwrap();
    assert!(
        eventually(SETTLE, || !on("mesh/friend", GUARDED)),
        "without its authorization the identity is refused"
    );

    // all-authenticated on the namespace: plain clients are refused on the open port.
    sb.apply(&mesh_namespace(Some("all-authenticated")))
        .unwrap();
    assert!(
        eventually(SETTLE, || !on("outside/stranger", OPEN)),
        "all-authenticated refuses the plain client"
    );
    assert!(on("mesh/foe", OPEN), "and admits meshed ones");
    assert!(on("outside/stranger", GUARDED), "the Server's own rules still apply");

    // deny: every client is refused on the ports no Server selects.
    sb.apply(&mesh_namespace(Some("deny"))).unwrap();
    assert!(
        eventually(SETTLE, || !on("mesh/foe", OPEN)),
        "deny refuses meshed clients"
    );
    assert!(!on("mesh/friend", OPEN), "every one of them");
    assert!(!on("outside/stranger", OPEN), "and plain ones");
}
