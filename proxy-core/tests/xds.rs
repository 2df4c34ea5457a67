//! The xDS client against the controller's real delta ADS server, over loopback TLS: initial
//! sync, updates, removals, a controller restart, and resumption from the versions held.

#[path = "../src/state/tests/workloads.rs"]
mod workloads;

use std::sync::Arc;
use std::time::Duration;

use api::security::{self as sec, Authorization, Clause, Rule, string_match::MatchType};
use api::workload::{self as wl, address};
use controller::translate::{Resource, Snapshot};
use hbone::Identity;
use proxy_core::settings::ControlPlaneSettings;
use proxy_core::state::{AuthzRequest, Decision, ProxyState};
use proxy_core::xds::{self, ClientIdentity};
use test_support::control_plane::{Controller, controller_identity};
use test_support::manifests::running_pod;
use tokio::sync::watch;
use workloads::{WEB, ip, pod, uid, web_service};

const TOKEN: &str = "zt-node1";
/// Upper bound on any wait; reaching it fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

/// A controller serving `snapshot`, with node1's ztunnel (token [`TOKEN`]) as its caller.
async fn start(snapshot: Arc<Snapshot>) -> Controller {
    Controller::builder()
        .token(
            TOKEN,
            "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
            Some("node1"),
        )
        .snapshot(snapshot)
        .start()
        .await
}

/// How node1's ztunnel reaches `server`.
fn control_config(server: &Controller) -> ControlPlaneSettings {
    ControlPlaneSettings {
        address: server.addr.to_string(),
        root_cert: server.root_cert(),
        token_file: Some(server.token_file(TOKEN)),
        server_identity: controller_identity().to_string(),
        learned_roots: Default::default(),
    }
}

/// The ztunnel of node1, as the controller sees it.
fn node1_ztunnel() -> ClientIdentity {
    ClientIdentity {
        node_id: xds::node_id("10.0.0.200", "ztunnel-x", "istio-system"),
        node_name: "node1".into(),
        cluster_id: "Kubernetes".into(),
    }
}

/// The web service's one port: 80, to 8080 on its pods.
const PORTS: &[(u32, u32)] = &[(80, 8080)];

/// A DENY of plaintext in `shop`, on `ports` (every port when empty).
fn deny_plaintext(ports: &[u32]) -> Authorization {
    Authorization {
        name: "deny-plaintext".into(),
        namespace: "shop".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![sec::Match {
                    not_principals: vec![sec::StringMatch {
                        match_type: Some(MatchType::Presence(())),
                    }],
                    destination_ports: ports.to_vec(),
                    ..Default::default()
                }],
            }],
        }],
        dry_run: false,
    }
}

/// Builds a snapshot from (name, version, body) entries of both types.
fn snapshot(
    addresses: &[(&str, &str, wl::Address)],
    policies: &[(&str, &str, Authorization)],
) -> Arc<Snapshot> {
    let addresses = addresses
        .iter()
        .map(|(name, version, body)| (api::ADDRESS_TYPE_URL, name, version, api::pack(body)));
    let policies = policies
        .iter()
        .map(|(name, version, body)| (api::AUTHORIZATION_TYPE_URL, name, version, api::pack(body)));
    let mut snapshot = Snapshot::default();
    for (type_url, name, version, body) in addresses.chain(policies) {
        snapshot
            .resources
            .entry(type_url.to_owned())
            .or_default()
            .insert(
                name.to_string(),
                Resource {
                    version: version.to_string(),
                    body,
                },
            );
    }
    Arc::new(snapshot)
}

/// Waits until `condition` holds, re-checking on every state change.
async fn wait_until(state: &ProxyState, what: &str, condition: impl Fn(&ProxyState) -> bool) {
    let mut changes = state.changes();
    let waited = tokio::time::timeout(PATIENCE, async {
        while !condition(state) {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// The verdict for a plaintext connection to workload `a` on `port`.
fn plaintext_to_a(state: &ProxyState, port: u16) -> Decision {
    let Some(a) = state.workload_by_uid(&uid("a")) else {
        return Decision::Deny("no workload a".into());
    };
    state.authorize(&AuthzRequest {
        source_identity: None,
        source_ip: "10.0.0.99".parse().unwrap(),
        destination: &a,
        destination_port: port,
    })
}

#[tokio::test]
async fn syncs_updates_removes_and_resumes_after_a_controller_restart() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut bad = pod("bad", "node1", "10.0.0.3", PORTS);
    if let Some(address::Type::Workload(w)) = &mut bad.r#type {
        w.addresses = vec![vec![10, 0, 0]];
    }
    let policy_name = "shop/deny-plaintext";
    let v1 = snapshot(
        &[
            (&uid("a"), "a1", pod("a", "node1", "10.0.0.1", PORTS)),
            (&uid("b"), "b1", pod("b", "node1", "10.0.0.2", PORTS)),
            (&uid("bad"), "bad1", bad.clone()),
            (WEB, "web1", web_service(PORTS)),
        ],
        &[(policy_name, "p1", deny_plaintext(&[]))],
    );
    let mut server = start(v1).await;

    let state = ProxyState::new();
    let (stop_client, shutdown) = watch::channel(false);
    let client = tokio::spawn(xds::run(
        control_config(&server),
        node1_ztunnel(),
        state.clone(),
        shutdown,
    ));

    // Initial sync: everything valid arrives; the invalid workload is refused.
    wait_until(&state, "the initial sync", |s| s.is_synced()).await;
    assert_eq!(state.workload_by_ip(ip("10.0.0.1")).unwrap().name, "a");
    assert_eq!(state.workload_by_ip(ip("10.0.0.2")).unwrap().name, "b");
    assert!(state.workload_by_uid(&uid("bad")).is_none());
    let web = state.service_by_vip(ip("10.96.0.10")).unwrap();
    assert_eq!(state.endpoints(&web, 80).len(), 2);
    assert!(matches!(plaintext_to_a(&state, 80), Decision::Deny(_)));

    // An update: a moves to a new address.
    let v2 = snapshot(
        &[
            (&uid("a"), "a2", pod("a", "node1", "10.0.0.11", PORTS)),
            (&uid("b"), "b1", pod("b", "node1", "10.0.0.2", PORTS)),
            (&uid("bad"), "bad1", bad.clone()),
            (WEB, "web1", web_service(PORTS)),
        ],
        &[(policy_name, "p1", deny_plaintext(&[]))],
    );
    server.publish(v2);
    wait_until(&state, "the update of a", |s| {
        s.workload_by_ip(ip("10.0.0.11")).is_some()
    })
    .await;
    assert!(state.workload_by_ip(ip("10.0.0.1")).is_none());

    // A removal: b goes away.
    let v3 = snapshot(
        &[
            (&uid("a"), "a2", pod("a", "node1", "10.0.0.11", PORTS)),
            (&uid("bad"), "bad1", bad.clone()),
            (WEB, "web1", web_service(PORTS)),
        ],
        &[(policy_name, "p1", deny_plaintext(&[]))],
    );
    server.publish(v3);
    wait_until(&state, "the removal of b", |s| {
        s.workload_by_uid(&uid("b")).is_none()
    })
    .await;

    // The controller goes away: the config stays.
    server.stop().await;
    assert_eq!(state.workload_by_ip(ip("10.0.0.11")).unwrap().name, "a");
    assert!(state.service_by_vip(ip("10.96.0.10")).is_some());
    assert!(matches!(plaintext_to_a(&state, 80), Decision::Deny(_)));
    let changes_before = *state.changes().borrow();

    // It comes back on the same address with the service removed and the policy narrowed.
    // The removal can only be reported if the client listed the service among the versions
    // it holds, and the unchanged workload a is not resent since its version matches.
    let v4 = snapshot(
        &[
            (&uid("a"), "a2", pod("a", "node1", "10.0.0.11", PORTS)),
            (&uid("bad"), "bad1", bad),
        ],
        &[(policy_name, "p2", deny_plaintext(&[9999]))],
    );
    server.restart(v4).await;
    wait_until(&state, "the resumed stream's changes", |s| {
        s.service_by_vip(ip("10.96.0.10")).is_none() && plaintext_to_a(s, 80) == Decision::Allow
    })
    .await;
    assert_eq!(
        *state.changes().borrow() - changes_before,
        2,
        "only the removal and the changed policy were applied"
    );
    assert!(matches!(plaintext_to_a(&state, 9999), Decision::Deny(_)));
    assert_eq!(state.workload_by_ip(ip("10.0.0.11")).unwrap().name, "a");

    // Shutdown stops the client.
    stop_client.send(true).unwrap();
    tokio::time::timeout(PATIENCE, client)
        .await
        .expect("the client stops")
        .unwrap();
    server.stop().await;
}

/// True when the state still holds what `v1` of the restart test serves: both pods, the
/// service and the DENY policy in force.
fn holds_everything(state: &ProxyState) -> bool {
    state.workload_by_uid(&uid("a")).is_some()
        && state.workload_by_uid(&uid("b")).is_some()
        && state.service_by_vip(ip("10.96.0.10")).is_some()
        && matches!(plaintext_to_a(state, 80), Decision::Deny(_))
}

#[tokio::test]
async fn a_restarted_controller_answering_with_nothing_does_not_wipe_the_proxy() {
    let v1 = snapshot(
        &[
            (&uid("a"), "a1", pod("a", "node1", "10.0.0.1", PORTS)),
            (&uid("b"), "b1", pod("b", "node1", "10.0.0.2", PORTS)),
            (WEB, "web1", web_service(PORTS)),
        ],
        &[("shop/deny-plaintext", "p1", deny_plaintext(&[]))],
    );
    let mut server = start(v1.clone()).await;
    let state = ProxyState::new();
    let (stop_client, shutdown) = watch::channel(false);
    let client = tokio::spawn(xds::run(
        control_config(&server),
        node1_ztunnel(),
        state.clone(),
        shutdown,
    ));
    wait_until(&state, "the initial sync", holds_everything).await;

    // The controller restarts and, wrongly, serves an empty configuration at first: to the
    // reconnecting client that reads as the removal of everything it holds.
    server.stop().await;
    server.restart(Arc::new(Snapshot::default())).await;
    // The client reconnects within a fraction of a second; sample well past that.
    for _ in 0..150 {
        assert!(holds_everything(&state), "the proxy kept its state");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its real configuration follows: nothing was lost on the way, nothing is removed later.
    server.publish(v1);
    for _ in 0..50 {
        assert!(holds_everything(&state), "the proxy kept its state");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    stop_client.send(true).unwrap();
    tokio::time::timeout(PATIENCE, client)
        .await
        .expect("the client stops")
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_while_the_controller_is_unreachable() {
    // Nothing listens on the stopped controller's port.
    let mut server = start(Arc::new(Snapshot::default())).await;
    server.stop().await;
    let state = ProxyState::new();
    let (stop_client, shutdown) = watch::channel(false);
    let client = tokio::spawn(xds::run(
        ControlPlaneSettings {
            token_file: None,
            ..control_config(&server)
        },
        ClientIdentity {
            node_id: "ztunnel~10.0.0.200~z.istio-system~istio-system.svc.cluster.local".into(),
            node_name: "node1".into(),
            cluster_id: "Kubernetes".into(),
        },
        state.clone(),
        shutdown,
    ));
    stop_client.send(true).unwrap();
    tokio::time::timeout(PATIENCE, client)
        .await
        .expect("the client stops")
        .unwrap();
    assert!(!state.is_synced());
}

/// What the controller translates from Istio resources is enforced as Istio enforces it:
/// PeerAuthentication STRICT / PERMISSIVE / DISABLE (with port exceptions both ways) and an
/// AuthorizationPolicy naming principals in Istio's form (without `spiffe://`).
#[test]
fn controller_translations_are_enforced_as_istio_does() {
    const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: relaxed}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: open}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: scrape, namespace: strict}
spec:
  selector: {matchLabels: {app: exporter}}
  portLevelMtls: {"9100": {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: admin-port, namespace: relaxed}
spec:
  selector: {matchLabels: {app: admin}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {"8443": {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cart-from-web, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/front/sa/web"]}}]
    to: [{operation: {ports: ["8080"]}}]
---
"#;
    let manifests = [
        ("strict", "app-1", "app", "10.244.1.40"),
        ("strict", "exporter-1", "exporter", "10.244.1.41"),
        ("relaxed", "web-1", "web", "10.244.1.42"),
        ("relaxed", "admin-1", "admin", "10.244.1.43"),
        ("open", "db-1", "db", "10.244.1.44"),
        ("shop", "cart-1", "cart", "10.244.1.45"),
    ]
    .iter()
    .fold(POLICIES.to_owned(), |yaml, (namespace, name, app, ip)| {
        yaml + &running_pod(namespace, name, &[("app", app)], "n1", ip)
    });
    let parsed = controller::model::parse_documents("inline", &manifests, false);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    let index = controller::model::Index::from_origins(vec![(
        "inline".into(),
        parsed.objects,
        parsed.problems,
    )]);
    let translation = controller::translate::translate(
        &index,
        &controller::translate::TranslateOptions::default(),
    );
    let state = ProxyState::new();
    for (name, resource) in translation.snapshot.of_type(api::ADDRESS_TYPE_URL) {
        state
            .apply_address(name, api::unpack(&resource.body).unwrap())
            .unwrap();
    }
    for (name, resource) in translation.snapshot.of_type(api::AUTHORIZATION_TYPE_URL) {
        state
            .apply_authorization(name, api::unpack(&resource.body).unwrap())
            .unwrap();
    }

    let web: Identity = "spiffe://cluster.local/ns/front/sa/web".parse().unwrap();
    let other: Identity = "spiffe://cluster.local/ns/front/sa/other".parse().unwrap();
    // (pod, port, peer identity, allowed)
    let cases: &[(&str, u16, Option<&Identity>, bool)] = &[
        ("strict/app-1", 80, None, false),
        ("strict/app-1", 80, Some(&other), true),
        ("strict/exporter-1", 9100, None, true),
        ("strict/exporter-1", 80, None, false),
        ("relaxed/web-1", 80, None, true),
        ("relaxed/admin-1", 8443, None, false),
        ("relaxed/admin-1", 8443, Some(&other), true),
        ("relaxed/admin-1", 80, None, true),
        ("open/db-1", 5432, None, true),
        ("shop/cart-1", 8080, Some(&web), true),
        ("shop/cart-1", 9090, Some(&web), false),
        ("shop/cart-1", 8080, Some(&other), false),
        ("shop/cart-1", 8080, None, false),
    ];
    for (pod, port, peer, allowed) in cases {
        let workload = state
            .workload_by_uid(&format!("Kubernetes//Pod/{pod}"))
            .unwrap_or_else(|| panic!("{pod} is known"));
        let decision = state.authorize(&AuthzRequest {
            source_identity: *peer,
            source_ip: "10.244.2.7".parse().unwrap(),
            destination: &workload,
            destination_port: *port,
        });
        assert_eq!(
            decision == Decision::Allow,
            *allowed,
            "{pod}:{port} from {peer:?}: {decision:?}"
        );
    }
}

/// `--controller-identity istiod.istio-system.svc` (or the IP the controller is dialled at):
/// the proxy checks the controller's certificate by name, as Istio's ztunnel does, and syncs.
#[tokio::test]
async fn syncs_with_a_controller_checked_by_name_or_ip() {
    let v1 = snapshot(
        &[(&uid("a"), "a1", pod("a", "node1", "10.0.0.1", PORTS))],
        &[],
    );
    let mut server = start(v1).await;
    for name in ["istiod.istio-system.svc", "127.0.0.1"] {
        let config = ControlPlaneSettings {
            server_identity: name.into(),
            ..control_config(&server)
        };
        let state = ProxyState::new();
        let (stop_client, shutdown) = watch::channel(false);
        let client = tokio::spawn(xds::run(config, node1_ztunnel(), state.clone(), shutdown));
        wait_until(&state, "the initial sync", |s| s.is_synced()).await;
        assert_eq!(state.workload_by_ip(ip("10.0.0.1")).unwrap().name, "a");
        stop_client.send(true).unwrap();
        tokio::time::timeout(PATIENCE, client)
            .await
            .expect("the client stops")
            .unwrap();
    }
    server.stop().await;
}
