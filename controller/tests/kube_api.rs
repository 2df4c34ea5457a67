//! The Kubernetes mode against a small fake API server on a loopback socket:
//! the source's list/watch and 404 handling, TokenReview, the CA Secret and
//! status patches, each checked on the requests the fake receives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::ca::auth::{AuthError, Authenticator};
use controller::ca::tokenreview::TokenReviewAuthenticator;
use controller::ca::{Origin, secret_store};
use controller::model::{Index, ObjectKey, Problem};
use controller::source::kube::WatchedKind;
use controller::source::kube::{Observed, ObservedMap};
use controller::source::{KubeSettings, KubeSource};
use controller::status;
use serde_json::{Value, json};
use test_support::fake_kube::{FakeKube, Reply, Request, Routes, list, not_found};
use test_support::fake_objects::Objects;
use test_support::process::KillOnDrop;
use test_support::wait::eventually;
use test_support::{TempDir, raw_http};
use tokio::sync::watch;

/// A safety net against a hung test, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

/// The controller's Lease collection.
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases";

/// What the fake serves: lists by path, Secrets by name, TokenReview answers, and the
/// controller's Lease.
#[derive(Default)]
struct Fake {
    lists: Routes,
    secrets: Mutex<BTreeMap<String, Value>>,
    reviews: BTreeMap<String, Value>,
    leases: Objects,
}

impl Fake {
    fn answer(&self, seen: &Request) -> Reply {
        const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
        if let Some(reply) = self.lists.answer(seen).or_else(|| self.leases.answer(seen)) {
            return reply;
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", path) if path.starts_with(SECRETS) => {
                let name = path.rsplit('/').next().unwrap_or_default();
                match self.secrets.lock().unwrap().get(name) {
                    Some(secret) => Reply::Json(200, secret.clone()),
                    None => not_found(),
                }
            }
            ("POST", SECRETS) => {
                let name = seen.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.secrets.lock().unwrap().insert(name, seen.body.clone());
                Reply::Json(201, seen.body.clone())
            }
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
                let token = seen.body["spec"]["token"].as_str().unwrap_or_default();
                let status = self.reviews.get(token).cloned().unwrap_or_else(
                    || json!({"authenticated": false, "error": "invalid bearer token"}),
                );
                let mut answer = seen.body.clone();
                answer["status"] = status;
                Reply::Json(201, answer)
            }
            // Server-side apply of anything: answered with what was sent.
            ("PATCH", _) if seen.content_type == "application/apply-patch+yaml" => {
                Reply::Json(200, seen.body.clone())
            }
            ("PATCH", path) if path.ends_with("/status") => Reply::Json(
                200,
                json!({"apiVersion": "v1", "kind": "Object", "metadata": {"name": "x"}}),
            ),
            _ => not_found(),
        }
    }
}

/// The fake serving, what it holds, and a client for it.
struct Running {
    server: FakeKube,
    fake: Arc<Fake>,
    client: kube::Client,
}

impl Running {
    fn seen(&self) -> Vec<Request> {
        self.server.seen()
    }
}

/// Serves `fake` on a loopback port.
fn start(mut fake: Fake) -> Running {
    fake.leases = Objects::new(&[LEASES]);
    let fake = Arc::new(fake);
    let serving = fake.clone();
    let server = FakeKube::serve(move |request| serving.answer(request));
    let url = server.url().parse().expect("url");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("client");
    Running {
        server,
        fake,
        client,
    }
}

fn routes(lists: BTreeMap<String, Value>) -> Routes {
    lists
        .into_iter()
        .fold(Routes::new(), |routes, (path, value)| {
            routes.json(&path, value)
        })
}

#[tokio::test]
async fn source_publishes_once_listed_and_treats_missing_crds_as_empty() {
    let route = json!({
        "metadata": {"name": "r", "namespace": "shop", "generation": 4, "resourceVersion": "9"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}]},
        "status": {"parents": []},
    });
    let lists = BTreeMap::from([
        (
            "/api/v1/namespaces".to_string(),
            list(
                "Namespace",
                vec![json!({"metadata": {"name": "shop", "resourceVersion": "3"}})],
            ),
        ),
        (
            "/api/v1/pods".to_string(),
            list(
                "Pod",
                vec![json!({
                    "metadata": {"name": "p", "namespace": "shop", "resourceVersion": "4"},
                    "spec": {"nodeName": "n1", "serviceAccountName": "sa"},
                    "status": {"phase": "Running", "podIP": "10.0.0.1"},
                })],
            ),
        ),
        ("/api/v1/services".to_string(), list("Service", vec![])),
        (
            "/apis/gateway.networking.k8s.io/v1/httproutes".to_string(),
            list("HTTPRoute", vec![route]),
        ),
    ]);
    // Every other custom resource answers 404: not installed.
    let fake = start(Fake {
        lists: routes(lists),
        ..Fake::default()
    });
    let client = fake.client.clone();
    let (index_tx, mut index_rx) = watch::channel(Arc::new(Index::new()));
    let (observed_tx, observed_rx) = watch::channel(Arc::new(ObservedMap::new()));
    let task =
        tokio::spawn(KubeSource::new(client, KubeSettings::default()).run(index_tx, observed_tx));
    let changed = tokio::time::timeout(PATIENCE, index_rx.changed()).await;
    assert!(matches!(changed, Ok(Ok(()))), "no index published");
    let index = index_rx.borrow_and_update().clone();
    assert!(index.namespace("shop").is_some());
    assert_eq!(
        index.pods_on_node("n1"),
        [("shop".to_string(), "sa".to_string())]
    );
    assert!(
        index
            .get(&ObjectKey::new("HTTPRoute", "shop", "r"))
            .is_some()
    );
    assert!(index.problems().is_empty(), "{:?}", index.problems());
    let observed = observed_rx.borrow().clone();
    let route = &observed[&ObjectKey::new("HTTPRoute", "shop", "r")];
    assert_eq!(
        (route.generation, route.resource_version.as_str()),
        (4, "9")
    );
    task.abort();
    // Every kind was listed, at its API version.
    let paths: Vec<String> = fake.seen().into_iter().map(|s| s.path).collect();
    for path in [
        "/apis/security.istio.io/v1/authorizationpolicies",
        "/apis/networking.istio.io/v1alpha3/envoyfilters",
        "/apis/split.smi-spec.io/v1alpha4/trafficsplits",
        "/apis/linkerd.io/v1alpha2/serviceprofiles",
        "/apis/gateway.networking.k8s.io/v1/grpcroutes",
    ] {
        assert!(
            paths.iter().any(|p| p == path),
            "{path} not listed: {paths:?}"
        );
    }
}

fn review_status(user: &str, node: &str) -> Value {
    json!({
        "authenticated": true,
        "audiences": ["istio-ca"],
        "user": {
            "username": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "extra": {"authentication.kubernetes.io/node-name": [node]},
        },
    })
}

#[tokio::test]
async fn token_review_asks_for_istio_ca_and_caches_positive_answers() {
    let mut fake = Fake::default();
    fake.reviews.insert(
        "good".into(),
        review_status("system:serviceaccount:istio-system:ztunnel", "node-7"),
    );
    let fake = start(fake);
    let client = fake.client.clone();
    let auth = TokenReviewAuthenticator::new(client, "cluster.local");
    let caller = auth.authenticate("good").await.expect("authenticated");
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
    );
    assert_eq!(caller.node.as_deref(), Some("node-7"));
    assert_eq!(auth.authenticate("good").await.expect("cached"), caller);
    assert!(matches!(
        auth.authenticate("bad").await,
        Err(AuthError::Unknown)
    ));
    assert!(matches!(
        auth.authenticate("bad").await,
        Err(AuthError::Unknown)
    ));
    let reviews: Vec<Request> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("tokenreviews"))
        .collect();
    // One review for the good token (then cached), one per refusal.
    assert_eq!(reviews.len(), 3);
    assert_eq!(reviews[0].body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(reviews[0].body["kind"], "TokenReview");
    assert_eq!(
        reviews[0].body["spec"],
        json!({"token": "good", "audiences": ["istio-ca"]})
    );
}

#[tokio::test]
async fn ca_secret_is_created_once_then_read_back() {
    let fake = start(Fake::default());
    let client = fake.client.clone();
    let (first, origin) =
        secret_store::load_or_create(client.clone(), "istio-system", "cluster.local")
            .await
            .expect("created");
    assert_eq!(origin, Origin::Generated);
    let stored = fake.fake.secrets.lock().unwrap()["istio-ca-secret"].clone();
    assert_eq!(stored["type"], "istio.io/ca-root");
    let keys: Vec<&String> = stored["data"].as_object().expect("data").keys().collect();
    assert_eq!(
        keys,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    let (second, origin) =
        secret_store::load_or_create(client.clone(), "istio-system", "cluster.local")
            .await
            .expect("reloaded");
    assert_eq!(origin, Origin::Reloaded);
    assert_eq!(first.roots(), second.roots());
    let creates = fake.seen().iter().filter(|s| s.method == "POST").count();
    assert_eq!(creates, 1);

    // An operator's plug-in CA wins over the generated root.
    let mut plugged = stored.clone();
    plugged["metadata"]["name"] = json!("cacerts");
    plugged["data"]["root-cert.pem"] = stored["data"]["ca-cert.pem"].clone();
    fake.fake
        .secrets
        .lock()
        .unwrap()
        .insert("cacerts".into(), plugged);
    let (_, origin) = secret_store::load_or_create(client, "istio-system", "cluster.local")
        .await
        .expect("plugged in");
    assert_eq!(origin, Origin::PluggedIn);
}

#[tokio::test]
async fn status_writer_sends_a_merge_patch_with_a_precondition() {
    let fake = start(Fake::default());
    let client = fake.client.clone();
    let mut count = fake.server.count();
    let key = ObjectKey::new("HTTPRoute", "shop", "r");
    let observed = ObservedMap::from([(
        key.clone(),
        Observed {
            kind: WatchedKind::by_kind("HTTPRoute").expect("kind"),
            generation: 2,
            resource_version: "77".into(),
            uid: "6f1c".into(),
            status: Value::Null,
            parent_refs: vec![json!({"group": "", "kind": "Service", "name": "reviews"})],
            targeted: false,
        },
    )]);
    let problem = Problem::new("kubernetes:HTTPRoute/shop/r", "HTTPRoute", "shop", "r")
        .field("spec.rules[0].filters[0].type")
        .message("unknown filter type");
    let (problems_tx, problems_rx) = watch::channel(None);
    let (observed_tx, observed_rx) = watch::channel(Arc::new(ObservedMap::new()));
    let writer = tokio::spawn(status::run(client, problems_rx, observed_rx));
    observed_tx.send_replace(Arc::new(observed));
    problems_tx.send_replace(Some(Arc::new(vec![problem])));
    let patched = tokio::time::timeout(PATIENCE, count.wait_for(|n| *n >= 1)).await;
    writer.abort();
    assert!(patched.is_ok(), "no status written");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let patch = &seen[0];
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/r/status"
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body["metadata"]["resourceVersion"], "77");
    let parent = &patch.body["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "istio.io/mesh-controller");
    assert_eq!(parent["conditions"][0]["status"], "False");
    assert_eq!(parent["conditions"][0]["observedGeneration"], 2);
}

#[tokio::test]
async fn binary_in_kubernetes_mode_becomes_ready() {
    let empty = |kind: &str| list(kind, vec![]);
    let namespace = |name: &str| json!({"metadata": {"name": name, "resourceVersion": "1"}});
    let fake = Fake {
        lists: routes(BTreeMap::from([
            (
                "/api/v1/namespaces".to_string(),
                list(
                    "Namespace",
                    vec![namespace("shop"), namespace("kube-system")],
                ),
            ),
            ("/api/v1/pods".to_string(), empty("Pod")),
            (
                "/api/v1/services".to_string(),
                list(
                    "Service",
                    vec![json!({
                        "metadata": {"name": "waypoint", "namespace": "shop", "resourceVersion": "5"},
                        "spec": {"clusterIP": "10.96.0.12", "ports": [{"name": "mesh", "port": 15008}]},
                    })],
                ),
            ),
            (
                "/apis/gateway.networking.k8s.io/v1/gateways".to_string(),
                list(
                    "Gateway",
                    vec![json!({
                        "metadata": {"name": "waypoint", "namespace": "shop", "uid": "gw-uid-1",
                                     "generation": 2, "resourceVersion": "6"},
                        "spec": {"gatewayClassName": "istio-waypoint",
                                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
                    })],
                ),
            ),
        ])),
        ..Fake::default()
    };
    let fake = start(fake);
    let dir = TempDir::new("controller-kube-mode");
    let kubeconfig = fake.server.kubeconfig(dir.path());
    // A free port for the admin endpoint (released just before the controller binds it).
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["--kubernetes", "--xds-addr", "127.0.0.1:0", "--admin-addr"])
        .arg(admin.to_string())
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("controller starts");
    let _running = KillOnDrop(child);
    let became_ready = tokio::time::timeout(PATIENCE, async {
        while !raw_http::try_get(admin, "/ready")
            .await
            .is_ok_and(|reply| reply.status == 200)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(became_ready.is_ok(), "controller never became ready");
    // It created its CA root in the root namespace's Secret, and publishes the roots there
    // first (once it leads).
    let is_bundle = |s: &Request| {
        s.method == "PATCH"
            && s.path == "/api/v1/namespaces/istio-system/configmaps/istio-ca-root-cert"
    };
    eventually("the trust bundle published for node proxies", || {
        fake.seen().iter().any(is_bundle)
    })
    .await;
    let published = fake.seen().into_iter().find(is_bundle).expect("published");
    assert!(
        published.body["data"]["root-cert.pem"]
            .as_str()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE"))
    );
    let secrets = fake.fake.secrets.lock().unwrap().clone();
    assert_eq!(
        secrets["istio-ca-secret"]["metadata"]["namespace"],
        "istio-system"
    );
    // Alone, it leads: the Lease names it.
    let lease = fake
        .fake
        .leases
        .get(&format!("{LEASES}/mesh-controller-leader"));
    assert!(
        lease.is_some_and(|l| l["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty())),
        "the controller holds its Lease"
    );

    // The waypoint Gateway gets its objects, owned by it, and its status address; every
    // namespace but the system ones gets the trust bundle.
    let wanted = [
        "/api/v1/namespaces/shop/serviceaccounts/waypoint",
        "/apis/apps/v1/namespaces/shop/deployments/waypoint",
        "/api/v1/namespaces/shop/services/waypoint",
        "/api/v1/namespaces/shop/configmaps/istio-ca-root-cert",
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint/status",
    ];
    let all_written = tokio::time::timeout(PATIENCE, async {
        loop {
            let seen = fake.seen();
            if wanted
                .iter()
                .all(|w| seen.iter().any(|s| s.method == "PATCH" && s.path == *w))
            {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let Ok(seen) = all_written else {
        panic!("not every waypoint object was written: {:?}", fake.seen());
    };
    let patch = |path: &str| {
        seen.iter()
            .find(|s| s.method == "PATCH" && s.path == path)
            .expect("written")
    };
    // Written once: nothing changed since, so nothing is written again.
    for path in wanted {
        let writes = seen
            .iter()
            .filter(|s| s.method == "PATCH" && s.path == path)
            .count();
        assert_eq!(writes, 1, "{path}");
    }
    let deployment = patch(wanted[1]);
    assert_eq!(deployment.content_type, "application/apply-patch+yaml");
    assert!(deployment.query.contains("fieldManager=mesh-controller"));
    assert!(deployment.query.contains("force=true"));
    assert_eq!(
        deployment.body["metadata"]["ownerReferences"][0]["uid"],
        "gw-uid-1"
    );
    let container = &deployment.body["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/ambient-mesh/waypoint:0.1.0");
    assert!(
        container["args"]
            .as_array()
            .expect("args")
            .contains(&json!("--controller=istiod.istio-system.svc:15012"))
    );
    let status = &patch(wanted[4]).body["status"];
    assert_eq!(
        status["addresses"],
        json!([{"type": "IPAddress", "value": "10.96.0.12"}])
    );
    assert_eq!(status["conditions"][1]["type"], "Programmed");
    assert_eq!(status["conditions"][1]["status"], "True");
    assert_eq!(status["conditions"][1]["observedGeneration"], 2);
    let bundle = patch(wanted[3]);
    assert_eq!(
        bundle.body["data"]["root-cert.pem"],
        published.body["data"]["root-cert.pem"]
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.path.starts_with("/api/v1/namespaces/kube-system/")),
        "kube-system gets no trust bundle"
    );
}

#[tokio::test]
async fn the_mesh_config_map_and_telemetry_reach_the_waypoint_configuration() {
    let mesh = "extensionProviders:\n- name: otel\n  opentelemetry: \
                {service: otel.obs.svc.cluster.local, port: 4317}\n";
    let lists = BTreeMap::from([
        (
            "/api/v1/namespaces".to_string(),
            list(
                "Namespace",
                vec![json!({"metadata": {"name": "shop", "labels": {
                    "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}}})],
            ),
        ),
        ("/api/v1/pods".to_string(), list("Pod", vec![])),
        (
            "/api/v1/services".to_string(),
            list(
                "Service",
                vec![json!({"metadata": {"name": "orders", "namespace": "shop"},
                            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}})],
            ),
        ),
        (
            "/api/v1/configmaps".to_string(),
            list(
                "ConfigMap",
                vec![
                    json!({"metadata": {"name": "istio", "namespace": "istio-system"},
                            "data": {"mesh": mesh}}),
                ],
            ),
        ),
        (
            "/apis/gateway.networking.k8s.io/v1/gateways".to_string(),
            list(
                "Gateway",
                vec![
                    json!({"metadata": {"name": "waypoint", "namespace": "shop"},
                            "spec": {"gatewayClassName": "istio-waypoint", "listeners": [
                                {"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}),
                ],
            ),
        ),
        (
            "/apis/telemetry.istio.io/v1/telemetries".to_string(),
            list(
                "Telemetry",
                vec![
                    json!({"metadata": {"name": "mesh-default", "namespace": "istio-system"},
                            "spec": {"tracing": [{"providers": [{"name": "otel"}],
                                                  "randomSamplingPercentage": 10.0}]}}),
                ],
            ),
        ),
    ]);
    let fake = start(Fake {
        lists: routes(lists),
        ..Fake::default()
    });
    let (index_tx, mut index_rx) = watch::channel(Arc::new(Index::new()));
    let (observed_tx, _observed_rx) = watch::channel(Arc::new(ObservedMap::new()));
    let source = KubeSource::new(fake.client.clone(), KubeSettings::default());
    let task = tokio::spawn(source.run(index_tx, observed_tx));
    let changed = tokio::time::timeout(PATIENCE, index_rx.changed()).await;
    assert!(matches!(changed, Ok(Ok(()))), "no index published");
    let index = index_rx.borrow_and_update().clone();
    task.abort();
    let translation = controller::translate::translate(
        &index,
        &controller::translate::TranslateOptions::default(),
    );
    let body = &translation.snapshot.resources[api::WAYPOINT_TYPE_URL]["shop/waypoint"].body;
    let waypoint: api::waypoint::Waypoint = api::unpack(body).expect("decodes");
    let providers: Vec<(&str, &str, u32)> = waypoint
        .tracing_providers
        .iter()
        .map(|p| (p.name.as_str(), p.namespace.as_str(), p.port))
        .collect();
    assert_eq!(providers, [("otel", "obs", 4317)]);
    let tracing = waypoint.services[0]
        .telemetry
        .as_ref()
        .and_then(|t| t.tracing.as_ref())
        .expect("traced");
    assert_eq!(
        (
            tracing.provider.as_str(),
            tracing.random_sampling_percentage
        ),
        ("otel", 10.0)
    );
    // Only the mesh config's ConfigMap is watched, not every ConfigMap of the cluster.
    let config_maps: Vec<Request> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path == "/api/v1/configmaps")
        .collect();
    assert!(!config_maps.is_empty());
    assert!(
        config_maps
            .iter()
            .all(|s| s.query.contains("fieldSelector=metadata.name%3Distio")),
        "{config_maps:?}"
    );
}
