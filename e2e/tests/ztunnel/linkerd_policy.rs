//! Linkerd's authorization policy enforced by ztunnel: a Server guards one port of a pod with
//! two, AuthorizationPolicies admit clients by mesh identity or by network, the default
//! inbound policy annotation governs the other port, and an invalid edit keeps the last good
//! version. Clients: two service accounts in the mesh, and a plain pod outside it. The
//! cluster is `examples/linkerd-policy`, so the example is what is tested.

use std::net::Ipv4Addr;

use e2e::examples;
use e2e::mesh::{get_json, wait_captured, ztunnel_dump};
use e2e::{SETTLE, Sandbox, eventually};

/// The port the Server guards.
const GUARDED: u16 = 8080;
/// The port no Server selects.
const OPEN: u16 = 9090;
/// The example this test runs.
const EXAMPLE: &str = "linkerd-policy";

/// The example's namespace `shop` with a default inbound policy.
fn shop_namespace(policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {{istio.io/dataplane-mode: ambient}}\n  annotations: {{config.linkerd.io/default-inbound-policy: {policy}}}\n"
    )
}

fn reaches(sb: &Sandbox, client: &str, server: Ipv4Addr, port: u16) -> bool {
    get_json(sb, client, &format!("http://{server}:{port}/linkerd")).is_ok()
}

#[test]
fn linkerd_servers_authorizations_and_default_policies_are_enforced() {
    let sb = super::up(&examples::yaml(EXAMPLE));
    wait_captured(&sb, "node1", &["shop/batch", "shop/frontend"]);
    wait_captured(&sb, "node2", &["shop/api"]);
    let server = sb.pod_ip("api").unwrap();
    let on = |client: &str, port: u16| reaches(&sb, client, server, port);

    // The Server admits the authorized identity only; the other port stays open to all.
    assert!(
        eventually(SETTLE, || on("shop/frontend", GUARDED)),
        "the authorized identity reaches the guarded port"
    );
    assert!(
        eventually(SETTLE, || !on("shop/batch", GUARDED)),
        "another identity is refused"
    );
    assert!(!on("outside/visitor", GUARDED), "a plain client is refused");
    for client in ["shop/batch", "outside/visitor", "shop/frontend"] {
        assert!(
            on(client, OPEN),
            "{client} reaches the port no Server selects"
        );
    }
    assert!(
        eventually(SETTLE, || ztunnel_dump(&sb, "node2")
            .to_string()
            .contains("linkerd_server_web_8080")),
        "the Server's policy shows in the server node's config dump"
    );

    // An invalid edit is reported with its field (`meshctl apply` judges it on its own), and
    // the controller keeps the last good version in force.
    let policy = std::fs::read_to_string(examples::folder(EXAMPLE).join("30-policy.yaml"))
        .expect("the example's policy");
    let broken = policy.replace(
        "frontend.shop.serviceaccount.identity.linkerd.cluster.local",
        "frontend.shop",
    );
    assert_ne!(broken, policy);
    let refused = sb
        .apply(&broken)
        .expect_err("apply reports the invalid object");
    let text = refused.to_string();
    for expected in ["MeshTLSAuthentication shop/frontend", "spec.identities[0]"] {
        assert!(text.contains(expected), "{expected:?} in {text}");
    }
    assert!(on("shop/frontend", GUARDED), "the last good version admits");
    assert!(!on("shop/batch", GUARDED), "the last good version refuses");

    // A NetworkAuthentication admits a plain client by its address.
    let visitor = sb.pod_ip("visitor").unwrap();
    let by_network = format!(
        r#"apiVersion: policy.linkerd.io/v1alpha1
kind: NetworkAuthentication
metadata: {{name: visitor-net, namespace: shop}}
spec:
  networks: [{{cidr: "{visitor}/32"}}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: web-visitor, namespace: shop}}
spec:
  targetRef: {{group: policy.linkerd.io, kind: Server, name: web}}
  requiredAuthenticationRefs:
  - {{group: policy.linkerd.io, kind: NetworkAuthentication, name: visitor-net}}
"#
    );
    sb.apply(&by_network).unwrap();
    assert!(
        eventually(SETTLE, || on("outside/visitor", GUARDED)),
        "the plain client's network is admitted"
    );
    assert!(
        !on("shop/batch", GUARDED),
        "other clients are still refused"
    );

    // Deleting the authorization refuses the client it admitted: the Server still guards.
    sb.delete(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: web-frontend, namespace: shop}\n",
    )
    .unwrap();
    assert!(
        eventually(SETTLE, || !on("shop/frontend", GUARDED)),
        "without its authorization the identity is refused"
    );

    // all-authenticated on the namespace: plain clients are refused on the open port.
    sb.apply(&shop_namespace("all-authenticated")).unwrap();
    assert!(
        eventually(SETTLE, || !on("outside/visitor", OPEN)),
        "all-authenticated refuses the plain client"
    );
    assert!(on("shop/batch", OPEN), "and admits meshed ones");
    assert!(
        on("outside/visitor", GUARDED),
        "the Server's own rules still apply"
    );

    // deny: every client is refused on the ports no Server selects.
    sb.apply(&shop_namespace("deny")).unwrap();
    assert!(
        eventually(SETTLE, || !on("shop/batch", OPEN)),
        "deny refuses meshed clients"
    );
    assert!(!on("shop/frontend", OPEN), "every one of them");
    assert!(!on("outside/visitor", OPEN), "and plain ones");
}
