//! The Kubernetes source's event handling, fed watcher events directly: what
//! index each sequence of Init / InitApply / InitDone / Apply / Delete leaves.
//! The tests at the end talk to a real cluster and are ignored by default.

use controller::model::{Index, Object, ObjectKey, parse_documents};
use controller::source::kube::{KubeState, WATCHED, WatchedKind, origin};
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

fn kind(name: &str) -> &'static WatchedKind {
    WatchedKind::by_kind(name).expect("watched kind")
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("dynamic object")
}

fn pod(ns: &str, name: &str, ip: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": format!("uid-{name}"),
            "resourceVersion": "7", "labels": {"app": "reviews"},
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"nodeName": "node-1", "serviceAccountName": "reviews", "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }))
}

/// A state where every kind has been listed empty.
fn synced() -> KubeState {
    let mut state = KubeState::new(WATCHED);
    for k in WATCHED {
        state.apply(k, Event::Init);
        state.apply(k, Event::InitDone);
    }
    assert!(state.synced());
    state
}

fn names(index: &Index, kind: &str) -> Vec<String> {
    index
        .of_kind(kind)
        .map(|s| {
            let m = s.object.metadata();
            format!("{}/{}", m.namespace, m.name)
        })
        .collect()
}

#[test]
fn not_synced_until_every_kind_is_listed_or_missing() {
    let mut state = KubeState::new(WATCHED);
    for k in WATCHED.iter().filter(|k| k.kind != "ServiceProfile") {
        state.apply(k, Event::Init);
        state.apply(k, Event::InitDone);
    }
    assert!(!state.synced());
    assert_eq!(state.pending(), ["ServiceProfile"]);
    // Its CRD is not installed: that counts as listed, with no objects.
    state.mark_missing(kind("ServiceProfile"));
    assert!(state.synced());
}

#[test]
fn objects_are_the_ones_a_manifest_file_yields() {
    let mut state = synced();
    state.apply(
        kind("Pod"),
        Event::Apply(pod("shop", "reviews-1", "10.244.1.5")),
    );
    let index = state.index();
    let key = ObjectKey::new("Pod", "shop", "reviews-1");
    let stored = index.get(&key).expect("pod indexed");
    assert_eq!(stored.origin, "kubernetes:Pod/shop/reviews-1");
    assert_eq!(stored.origin, origin("Pod", "shop", "reviews-1"));
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-1\n  namespace: shop\n  uid: uid-reviews-1\n  labels: {app: reviews}\nspec:\n  nodeName: node-1\n  serviceAccountName: reviews\n  containers: [{name: c}]\nstatus:\n  phase: Running\n  podIP: 10.244.1.5\n  podIPs: [{ip: 10.244.1.5}]\n";
    let from_file = parse_documents("pods.yaml", yaml, false);
    assert_eq!(from_file.objects, vec![stored.object.clone()]);
    assert_eq!(
        index.pods_on_node("node-1"),
        [("shop".to_string(), "reviews".to_string())]
    );
}

#[test]
fn list_items_without_type_fields_and_cluster_scoped_kinds() {
    let mut state = KubeState::new(WATCHED);
    // Items of a list response usually carry no apiVersion/kind.
    let ns = object(
        json!({"metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}}),
    );
    let route = object(json!({
        "metadata": {"name": "r", "namespace": "shop"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "reviews"}]},
        "status": {"parents": []},
    }));
    state.apply(kind("Namespace"), Event::Init);
    state.apply(kind("Namespace"), Event::InitApply(ns));
    state.apply(kind("Namespace"), Event::InitDone);
    state.apply(kind("HTTPRoute"), Event::Init);
    state.apply(kind("HTTPRoute"), Event::InitApply(route));
    state.apply(kind("HTTPRoute"), Event::InitDone);
    let index = state.index();
    let namespace = index.namespace("shop").expect("namespace");
    assert_eq!(
        namespace.metadata.labels["istio.io/dataplane-mode"],
        "ambient"
    );
    assert_eq!(
        index
            .get(&ObjectKey::new("Namespace", "", "shop"))
            .map(|s| s.origin.as_str()),
        Some("kubernetes:Namespace/shop")
    );
    match &index
        .get(&ObjectKey::new("HTTPRoute", "shop", "r"))
        .expect("route")
        .object
    {
        Object::Raw { value, .. } => {
            assert_eq!(value["apiVersion"], "gateway.networking.k8s.io/v1");
            assert_eq!(value["kind"], "HTTPRoute");
            // What controllers write is not part of the object's config.
            assert!(value.get("status").is_none());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn linkerds_http_route_is_watched_apart_from_the_gateway_apis_of_the_same_name() {
    let linkerd = kind("HTTPRoute.policy.linkerd.io");
    assert_eq!(linkerd.api_resource().group, "policy.linkerd.io");
    assert_eq!(linkerd.api_resource().kind, "HTTPRoute");
    assert_eq!(linkerd.api_resource().plural, "httproutes");
    let mut state = synced();
    let route = |rules: Value| {
        object(json!({
            "metadata": {"name": "orders", "namespace": "shop", "resourceVersion": "3"},
            "spec": {"parentRefs": [{"name": "x"}], "rules": rules},
        }))
    };
    state.apply(kind("HTTPRoute"), Event::Apply(route(json!([]))));
    state.apply(
        linkerd,
        Event::Apply(route(json!([{"matches": [{"path": {"value": "/admin"}}]}]))),
    );
    let index = state.index();
    let version = |kind: &str| match &index
        .get(&ObjectKey::new(kind, "shop", "orders"))
        .expect("indexed")
        .object
    {
        Object::Raw { value, .. } => (
            value["apiVersion"].as_str().unwrap_or_default().to_owned(),
            value["spec"]["rules"].as_array().map_or(0, Vec::len),
        ),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        version("HTTPRoute"),
        ("gateway.networking.k8s.io/v1".into(), 0)
    );
    assert_eq!(
        version("HTTPRoute.policy.linkerd.io"),
        ("policy.linkerd.io/v1beta3".into(), 1)
    );
    // As a manifest file keys it.
    let yaml = "apiVersion: policy.linkerd.io/v1beta3\nkind: HTTPRoute\nmetadata: {name: orders, namespace: shop}\nspec: {parentRefs: [{name: x}]}\n";
    let parsed = parse_documents("routes.yaml", yaml, false);
    assert_eq!(parsed.objects[0].key().kind, "HTTPRoute.policy.linkerd.io");
}

#[test]
fn apply_and_delete() {
    let mut state = synced();
    state.take_index_changed();
    assert!(state.apply(kind("Pod"), Event::Apply(pod("shop", "a", "10.0.0.1"))));
    assert!(state.apply(kind("Pod"), Event::Apply(pod("shop", "b", "10.0.0.2"))));
    // An update that changes nothing the index holds (resourceVersion,
    // managedFields) is not a change.
    let mut same = pod("shop", "a", "10.0.0.1");
    same.metadata.resource_version = Some("8".into());
    assert!(!state.apply(kind("Pod"), Event::Apply(same)));
    assert!(state.apply(kind("Pod"), Event::Apply(pod("shop", "a", "10.0.0.9"))));
    assert!(state.apply(kind("Pod"), Event::Delete(pod("shop", "b", "10.0.0.2"))));
    assert!(!state.apply(kind("Pod"), Event::Delete(pod("shop", "b", "10.0.0.2"))));
    let index = state.index();
    assert_eq!(names(&index, "Pod"), ["shop/a"]);
    match &index
        .get(&ObjectKey::new("Pod", "shop", "a"))
        .expect("pod")
        .object
    {
        Object::Pod(p) => assert_eq!(p.status.pod_ip, "10.0.0.9"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(state.take_index_changed());
    assert!(!state.take_index_changed());
}

#[test]
fn restart_replaces_the_kind_wholesale() {
    let mut state = synced();
    for name in ["a", "b", "c"] {
        state.apply(kind("Pod"), Event::Apply(pod("shop", name, "10.0.0.1")));
    }
    state.apply(
        kind("Service"),
        Event::Apply(object(json!({
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 9080}]},
        }))),
    );
    // The watch restarts: while the relist runs, the old objects stay in force.
    state.apply(kind("Pod"), Event::Init);
    state.apply(kind("Pod"), Event::InitApply(pod("shop", "b", "10.0.0.2")));
    state.apply(kind("Pod"), Event::InitApply(pod("shop", "d", "10.0.0.4")));
    assert_eq!(names(&state.index(), "Pod"), ["shop/a", "shop/b", "shop/c"]);
    // Listed: a and c were deleted while the watch was down; b changed; d is new.
    assert!(state.apply(kind("Pod"), Event::InitDone));
    let index = state.index();
    assert_eq!(names(&index, "Pod"), ["shop/b", "shop/d"]);
    assert_eq!(
        names(&index, "Service"),
        ["shop/reviews"],
        "other kinds untouched"
    );
    assert!(
        index.problems().is_empty(),
        "no duplicates: {:?}",
        index.problems()
    );

    // A second restart listing the same objects changes nothing.
    state.take_index_changed();
    state.apply(kind("Pod"), Event::Init);
    state.apply(kind("Pod"), Event::InitApply(pod("shop", "d", "10.0.0.4")));
    state.apply(kind("Pod"), Event::InitApply(pod("shop", "b", "10.0.0.2")));
    assert!(!state.apply(kind("Pod"), Event::InitDone));
    assert!(!state.take_index_changed());
    assert_eq!(state.index(), index);
}

#[test]
fn missing_crd_empties_its_kind_only() {
    let mut state = synced();
    let ts = object(json!({
        "metadata": {"name": "split", "namespace": "shop"},
        "spec": {"service": "reviews", "backends": [{"service": "reviews-v1", "weight": 100}]},
    }));
    state.apply(kind("TrafficSplit"), Event::Apply(ts));
    state.apply(kind("Pod"), Event::Apply(pod("shop", "a", "10.0.0.1")));
    assert_eq!(names(&state.index(), "TrafficSplit"), ["shop/split"]);
    // The CRD was removed (its objects with it).
    assert!(state.mark_missing(kind("TrafficSplit")));
    assert!(!state.mark_missing(kind("TrafficSplit")));
    let index = state.index();
    assert!(names(&index, "TrafficSplit").is_empty());
    assert_eq!(names(&index, "Pod"), ["shop/a"]);
}

fn policy(action: &str, rv: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny", "namespace": "shop", "generation": 2, "resourceVersion": rv},
        "spec": {"action": action, "rules": [{"from": [{"source": {"namespaces": ["other"]}}]}]},
    }))
}

#[test]
fn invalid_update_keeps_the_last_good_version() {
    let mut state = synced();
    state.apply(
        kind("AuthorizationPolicy"),
        Event::Apply(policy("DENY", "1")),
    );
    let good = state.index();
    assert!(good.problems().is_empty());
    // `rules` must be a list: the update does not decode.
    let mut broken = policy("DENY", "2");
    broken.data["spec"]["rules"] = json!("everything");
    assert!(state.apply(kind("AuthorizationPolicy"), Event::Apply(broken)));
    let index = state.index();
    let key = ObjectKey::new("AuthorizationPolicy", "shop", "deny");
    assert_eq!(
        index.get(&key),
        good.get(&key),
        "last good version in force"
    );
    let problems = index.problems();
    assert!(!problems.is_empty());
    assert!(
        problems
            .iter()
            .all(|p| p.origin == "kubernetes:AuthorizationPolicy/shop/deny")
    );
    assert!(
        problems.iter().any(|p| p.field == "spec.rules"
            && p.message.ends_with("expected a sequence; object skipped")),
        "{problems:?}"
    );
    // Fixed again: the problems go.
    state.apply(
        kind("AuthorizationPolicy"),
        Event::Apply(policy("ALLOW", "3")),
    );
    assert!(state.index().problems().is_empty());
    // A first version that is already broken is kept with what could be read of it and why
    // it could not be read in full: translation fails it closed (a policy never vanishes
    // because of a typo).
    let mut new = policy("DENY", "1");
    new.metadata.name = Some("other".into());
    new.data["spec"]["rules"] = json!(7);
    state.apply(kind("AuthorizationPolicy"), Event::Apply(new));
    let index = state.index();
    let stored = index
        .get(&ObjectKey::new("AuthorizationPolicy", "shop", "other"))
        .expect("the broken policy is kept");
    let unreadable = stored.object.unreadable().expect("marked unreadable");
    assert_eq!(unreadable.field, "spec.rules");
    assert!(
        unreadable.message.ends_with("expected a sequence"),
        "{unreadable:?}"
    );
    let Object::AuthorizationPolicy(policy) = &stored.object else {
        panic!("an AuthorizationPolicy");
    };
    assert_eq!(policy.spec.action.as_deref(), Some("DENY"));
    assert!(policy.spec.rules.is_empty());
}

#[test]
fn status_changes_reach_the_status_writer_not_the_index() {
    let mut state = synced();
    state.apply(
        kind("AuthorizationPolicy"),
        Event::Apply(policy("DENY", "1")),
    );
    state.take_index_changed();
    state.take_observed_changed();
    let key = ObjectKey::new("AuthorizationPolicy", "shop", "deny");
    assert_eq!(state.observed()[&key].generation, 2);
    // Our own status write comes back as an update of status and resourceVersion.
    let mut written = policy("DENY", "2");
    written.data["status"] = json!({"conditions": [{"type": "ZtunnelAccepted", "status": "True"}]});
    assert!(!state.apply(kind("AuthorizationPolicy"), Event::Apply(written)));
    assert!(!state.take_index_changed());
    assert!(state.take_observed_changed());
    let observed = state.observed();
    assert_eq!(observed[&key].resource_version, "2");
    assert_eq!(
        observed[&key].status["conditions"][0]["type"],
        "ZtunnelAccepted"
    );
    // Of kinds without a status only the uid is observed (for Events): a pod's status
    // changes reach no writer.
    state.apply(kind("Pod"), Event::Apply(pod("shop", "a", "10.0.0.1")));
    state.take_observed_changed();
    let pod_key = ObjectKey::new("Pod", "shop", "a");
    let observed = state.observed()[&pod_key].clone();
    assert_eq!(
        (observed.uid.as_str(), observed.resource_version.as_str()),
        ("uid-a", "")
    );
    assert_eq!(observed.status, Value::Null);
    let mut moved = pod("shop", "a", "10.0.0.2");
    moved.metadata.resource_version = Some("8".into());
    state.apply(kind("Pod"), Event::Apply(moved));
    assert!(!state.take_observed_changed());
}

/// A client for the cluster of the current kubeconfig (or the in-cluster
/// service account), or `None` when there is no cluster to talk to.
async fn cluster() -> Option<kube::Client> {
    let configured = std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".kube/config").exists())
            .unwrap_or(false);
    if !configured {
        eprintln!("no kubeconfig: skipping");
        return None;
    }
    match kube::Client::try_default().await {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("no usable cluster ({e}): skipping");
            None
        }
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (kubeconfig)"]
async fn real_cluster_first_index_has_the_default_namespace() {
    use std::sync::Arc;
    use tokio::sync::watch;
    let Some(client) = cluster().await else {
        return;
    };
    let (index_tx, mut index_rx) = watch::channel(Arc::new(Index::new()));
    let (observed_tx, _observed_rx) = watch::channel(Arc::new(Default::default()));
    let source = controller::source::KubeSource::new(client, Default::default());
    let task = tokio::spawn(source.run(index_tx, observed_tx));
    // A safety net against a hung cluster, not a timing assertion.
    let first = tokio::time::timeout(std::time::Duration::from_secs(120), index_rx.changed()).await;
    task.abort();
    assert!(matches!(first, Ok(Ok(()))), "no index published");
    let index = index_rx.borrow().clone();
    assert!(index.namespace("default").is_some());
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (kubeconfig)"]
async fn real_cluster_refuses_a_forged_token() {
    use controller::ca::auth::{AuthError, Authenticator};
    use controller::ca::tokenreview::TokenReviewAuthenticator;
    let Some(client) = cluster().await else {
        return;
    };
    let auth = TokenReviewAuthenticator::new(client, "cluster.local");
    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YTpiIn0.c2ln";
    assert!(matches!(
        auth.authenticate(forged).await,
        Err(AuthError::Unknown)
    ));
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster (kubeconfig) and rights on Namespaces and Secrets"]
async fn real_cluster_ca_secret_is_created_then_reused() {
    use controller::ca::{Origin, secret_store};
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, DeleteParams, PostParams};
    let Some(client) = cluster().await else {
        return;
    };
    let name = format!("mesh-ca-test-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let first = secret_store::load_or_create(client.clone(), &name, "cluster.local").await;
    let second = secret_store::load_or_create(client.clone(), &name, "cluster.local").await;
    // Leave nothing behind, whatever happened.
    let _ = namespaces.delete(&name, &DeleteParams::default()).await;
    let (first, origin) = first.expect("created");
    assert_eq!(origin, Origin::Generated);
    let (second, origin) = second.expect("reloaded");
    assert_eq!(origin, Origin::Reloaded);
    assert_eq!(first.roots(), second.roots());
}
