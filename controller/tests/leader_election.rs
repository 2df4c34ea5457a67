//! Two controller replicas (the binary, twice) against one fake API server that keeps the
//! Lease and the CA Secret as a real one does (created once, replaced only at the current
//! resourceVersion): one leads and alone writes; killed, it stops renewing, and the other
//! takes the Lease over once it has expired and starts writing. Each replica reaches the
//! shared cluster through a front end of its own, so the requests of each are told apart.

mod kube_replicas;

use std::sync::Arc;

use kube_replicas::{LEASES, Replica};
use serde_json::{Value, json};
use test_support::fake_kube::{Reply, Request, Routes, list, not_found};
use test_support::fake_objects::Objects;
use test_support::raw_http;
use test_support::wait::eventually;
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/mesh-controller-leader";
const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
/// What only a leader writes: the waypoint's Deployment.
const DEPLOYMENT: &str = "PATCH /apis/apps/v1/namespaces/shop/deployments/waypoint";
const GATEWAY_STATUS: &str =
    "PATCH /apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint/status";
/// The status condition every AuthorizationPolicy gets.
const POLICY_STATUS: &str =
    "PATCH /apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/allow/status";

/// The cluster both replicas see: a namespace with a waypoint Gateway and its Service and an
/// AuthorizationPolicy, the Lease and the Secrets; writes of anything else are accepted.
struct Cluster {
    lists: Routes,
    objects: Objects,
}

impl Cluster {
    fn new() -> Self {
        let lists = Routes::new()
            .json(
                "/api/v1/namespaces",
                list("Namespace", vec![json!({"metadata": {"name": "shop"}})]),
            )
            .json("/api/v1/pods", list("Pod", vec![]))
            .json(
                "/api/v1/services",
                list(
                    "Service",
                    vec![json!({
                        "metadata": {"name": "waypoint", "namespace": "shop"},
                        "spec": {"clusterIP": "10.96.0.12", "ports": [{"name": "mesh", "port": 15008}]},
                    })],
                ),
            )
            .json(
                "/apis/gateway.networking.k8s.io/v1/gateways",
                list(
                    "Gateway",
                    vec![json!({
                        "metadata": {"name": "waypoint", "namespace": "shop", "uid": "gw-1", "generation": 1},
                        "spec": {"gatewayClassName": "istio-waypoint",
                                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
                    })],
                ),
            );
        let lists = lists.json(
            "/apis/security.istio.io/v1/authorizationpolicies",
            list(
                "AuthorizationPolicy",
                vec![json!({
                    "metadata": {"name": "allow", "namespace": "shop", "uid": "ap-1",
                                 "generation": 1, "resourceVersion": "7"},
                    "spec": {"action": "ALLOW", "rules": [{}]},
                })],
            ),
        );
        Self {
            lists,
            objects: Objects::new(&[LEASES, SECRETS]),
        }
    }

    fn answer(&self, request: &Request) -> Reply {
        if let Some(reply) = self
            .lists
            .answer(request)
            .or_else(|| self.objects.answer(request))
        {
            return reply;
        }
        match request.method.as_str() {
            "PATCH" if request.content_type == "application/apply-patch+yaml" => {
                Reply::Json(200, request.body.clone())
            }
            "PATCH" if request.path.ends_with("/status") => Reply::Json(
                200,
                json!({"apiVersion": "v1", "kind": "Object", "metadata": {"name": "x"}}),
            ),
            _ => not_found(),
        }
    }

    fn holder(&self) -> Option<String> {
        let lease = self.objects.get(LEASE)?;
        lease["spec"]["holderIdentity"].as_str().map(str::to_string)
    }
}

/// Starts the controller as pod `name` against `cluster`.
fn start(name: &'static str, cluster: &Arc<Cluster>) -> Replica {
    let serving = cluster.clone();
    Replica::start(name, move |request| serving.answer(request))
}

/// The samples of `/metrics` about the leader election.
async fn leader_metrics(replica: &Replica) -> Vec<String> {
    let body = raw_http::get(replica.admin, "/metrics").await.body;
    body.lines()
        .filter(|l| l.starts_with("leader_election_") || l.starts_with("controller_leader_"))
        .map(str::to_string)
        .collect()
}
fn leader_samples(leading: bool, acquired: u32) -> Vec<String> {
    vec![
        format!(
            "leader_election_master_status{{name=\"mesh-controller-leader\"}} {}",
            u8::from(leading)
        ),
        format!("controller_leader_transitions_total{{change=\"acquired\"}} {acquired}"),
        "controller_leader_transitions_total{change=\"lost\"} 0".to_string(),
    ]
}

#[tokio::test]
async fn one_replica_writes_and_the_other_takes_over_once_the_leader_stops_renewing() {
    let cluster = Arc::new(Cluster::new());
    let mut replicas = [
        start("controller-a", &cluster),
        start("controller-b", &cluster),
    ];
    // Both serve xDS and the CA.
    for replica in &replicas {
        replica.until_ready().await;
    }
    eventually("a replica holding the Lease", || cluster.holder().is_some()).await;
    let holder = cluster.holder().expect("held");
    if holder != replicas[0].name {
        replicas.swap(0, 1);
    }
    let [leader, follower] = &mut replicas;
    assert_eq!(leader.name, holder);
    eventually("the leader's waypoint and statuses", || {
        [DEPLOYMENT, GATEWAY_STATUS, POLICY_STATUS]
            .iter()
            .all(|w| leader.has_written(w))
    })
    .await;

    // The leader alone created the one CA root; the follower read it and wrote nothing.
    let created: Vec<String> = leader
        .writes()
        .into_iter()
        .filter(|w| w.starts_with("POST ") && w.contains("/secrets"))
        .collect();
    assert_eq!(created, [format!("POST {SECRETS}")]);
    assert_eq!(follower.writes(), Vec::<String>::new());
    let read_root = follower
        .front
        .seen()
        .iter()
        .any(|r| r.method == "GET" && r.path == format!("{SECRETS}/istio-ca-secret"));
    assert!(read_root, "the follower loads the leader's root");
    assert_eq!(leader_metrics(leader).await, leader_samples(true, 1));
    assert_eq!(leader_metrics(follower).await, leader_samples(false, 0));

    // Killed, the leader neither renews nor releases: the Lease must expire first.
    drop(leader.process.take());
    let next = follower.name;
    eventually("the follower holding the Lease", || {
        cluster.holder().as_deref() == Some(next)
    })
    .await;
    eventually("the new leader's waypoint and statuses", || {
        [DEPLOYMENT, GATEWAY_STATUS, POLICY_STATUS]
            .iter()
            .all(|w| follower.has_written(w))
    })
    .await;
    let lease: Value = cluster.objects.get(LEASE).expect("the Lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);
    assert_eq!(leader_metrics(follower).await, leader_samples(true, 1));
    // No second root: the new leader kept the one it loaded.
    assert!(
        !follower.writes().iter().any(|w| w.contains("/secrets")),
        "{:?}",
        follower.writes()
    );
}
