//! `meshctl install` output applied to a fake API server as `kubectl apply --server-side`
//! does (kube-rs, server-side apply per object, in the printed order): every object lands at
//! its resource path, namespaced ones only once their namespace exists; and the verbs' exit
//! statuses as scripts see them.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use test_support::fake_kube::{FakeKube, Reply, Request, not_found};

/// Runs the built meshctl; returns (exit code, stdout, stderr).
fn meshctl(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(args)
        .output()
        .expect("run meshctl");
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("UTF-8"),
        String::from_utf8(out.stderr).expect("UTF-8"),
    )
}

/// The documents of multi-document YAML, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects stored by path, as the API server keeps them.
type Store = Arc<Mutex<BTreeMap<String, Value>>>;

/// A minimal API server for server-side apply: `PATCH` with an apply patch and a field
/// manager stores the object (a namespaced one only in an existing namespace, as admission
/// does), `GET` returns what is stored.
fn api_server(store: Store) -> FakeKube {
    FakeKube::serve(move |request: &Request| {
        let mut objects = store.lock().expect("not poisoned");
        match request.method.as_str() {
            "GET" => objects
                .get(&request.path)
                .map(|o| Reply::Json(200, o.clone()))
                .unwrap_or_else(not_found),
            "PATCH" if request.content_type != "application/apply-patch+yaml" => Reply::Json(
                415,
                json!({"kind": "Status", "code": 415, "reason": "UnsupportedMediaType"}),
            ),
            "PATCH" if !request.query.contains("fieldManager=") => Reply::Json(
                400,
                json!({"kind": "Status", "code": 400, "reason": "BadRequest",
                       "message": "PATCH apply requires fieldManager"}),
            ),
            "PATCH" => {
                if let Some(namespace) = request.body["metadata"]["namespace"].as_str() {
                    let path = format!("/api/v1/namespaces/{namespace}");
                    if !objects.contains_key(&path) {
                        return Reply::Json(
                            404,
                            json!({"kind": "Status", "code": 404, "reason": "NotFound",
                                   "message": format!("namespaces \"{namespace}\" not found")}),
                        );
                    }
                }
                objects.insert(request.path.clone(), request.body.clone());
                Reply::Json(200, request.body.clone())
            }
            _ => not_found(),
        }
    })
}

/// The object's API, as kubectl finds it from its apiVersion and kind.
fn api_for(client: &kube::Client, object: &Value) -> (Api<DynamicObject>, String) {
    let (group, version) = match object["apiVersion"].as_str().expect("apiVersion") {
        v if v.contains('/') => v.split_once('/').expect("group/version"),
        v => ("", v),
    };
    let kind = object["kind"].as_str().expect("kind");
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let name = object["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    let api = match object["metadata"]["namespace"].as_str() {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    (api, name)
}

#[tokio::test]
async fn install_output_applies_to_the_api_server_object_by_object() {
    let (code, stdout, stderr) = meshctl(&[
        "install",
        "--set",
        "namespace=mesh-system",
        "--set",
        "image.tag=2.0.0",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let objects = documents(&stdout);
    assert_eq!(objects.len(), 29);

    let store = Store::default();
    let fake = api_server(store.clone());
    let config = kube::Config::new(fake.url().parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    let apply = PatchParams::apply("meshctl-install-test");
    for object in &objects {
        let (api, name) = api_for(&client, object);
        let applied = api
            .patch(&name, &apply, &Patch::Apply(object))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", object["kind"]));
        assert_eq!(applied.metadata.name.as_deref(), Some(name.as_str()));
    }

    // Each object landed where the API serves its kind, and reads back as applied.
    let stored = store.lock().expect("not poisoned").clone();
    assert_eq!(stored.len(), objects.len());
    for path in [
        "/api/v1/namespaces/mesh-system",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/authorizationpolicies.security.istio.io",
        "/api/v1/namespaces/mesh-system/serviceaccounts/controller",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/mesh-controller",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/mesh-system/rolebindings/mesh-controller-ca",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/mesh-system/rolebindings/mesh-controller-leader-election",
        "/api/v1/namespaces/mesh-system/services/istiod",
        "/apis/apps/v1/namespaces/mesh-system/deployments/controller",
        "/apis/policy/v1/namespaces/mesh-system/poddisruptionbudgets/controller",
        "/apis/apps/v1/namespaces/mesh-system/daemonsets/ztunnel",
    ] {
        assert!(
            stored.contains_key(path),
            "{path} not applied: {:?}",
            stored.keys()
        );
    }
    for object in &objects {
        let (api, name) = api_for(&client, object);
        let read = api.get(&name).await.expect("read back");
        assert_eq!(
            serde_json::to_value(&read).expect("JSON")["spec"],
            object["spec"]
        );
    }
    // The order mattered: an object of a namespace not applied yet is refused.
    let mut elsewhere = objects.last().expect("the DaemonSet").clone();
    elsewhere["metadata"]["namespace"] = json!("elsewhere");
    let (api, name) = api_for(&client, &elsewhere);
    let refused = api.patch(&name, &apply, &Patch::Apply(&elsewhere)).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 404),
        "{refused:?}"
    );
    let daemonset = &stored["/apis/apps/v1/namespaces/mesh-system/daemonsets/ztunnel"];
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/ambient-mesh/ztunnel:2.0.0"
    );
}

#[test]
fn a_refused_option_exits_2_naming_the_key_and_printing_nothing() {
    let (code, stdout, stderr) = meshctl(&["install", "--set", "controller.replicas=0"]);
    assert_eq!(code, Some(2));
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        "error: --set controller.replicas=0: a whole number from 1 to 10\n"
    );
    let (code, _, stderr) = meshctl(&["uninstall", "--set", "namespaces=x"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("error: --set namespaces: unknown key; valid keys: namespace, "),
        "{stderr}"
    );
}

#[test]
fn several_controller_replicas_are_installed_with_their_leader_election_rights() {
    // The replicas elect one writer through a Lease: nothing to warn about.
    let (code, stdout, stderr) = meshctl(&["install", "--set", "controller.replicas=3"]);
    assert_eq!(code, Some(0));
    assert_eq!(stderr, "");
    let objects = documents(&stdout);
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    assert_eq!(find("Deployment", "controller")["spec"]["replicas"], 3);
    let rules = &find("Role", "mesh-controller-leader-election")["rules"];
    assert_eq!(rules[0]["resources"], json!(["leases"]));
    assert_eq!(rules[0]["verbs"], json!(["create"]));
    assert_eq!(rules[1]["verbs"], json!(["get", "update"]));
    assert_eq!(rules[1]["resourceNames"], json!(["mesh-controller-leader"]));
    let binding = find("RoleBinding", "mesh-controller-leader-election");
    assert_eq!(binding["subjects"][0]["name"], "controller");
    assert_eq!(
        find("PodDisruptionBudget", "controller")["spec"]["maxUnavailable"],
        1
    );
}

#[test]
fn uninstall_names_the_objects_in_reverse_order_and_keeps_the_crds_unless_asked() {
    let (code, stdout, stderr) = meshctl(&["uninstall", "-o", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("each node agent then releases the pods"),
        "{stderr}"
    );
    let list: Value = serde_json::from_str(&stdout).expect("JSON");
    let names: Vec<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names.first().map(String::as_str), Some("DaemonSet/ztunnel"));
    assert_eq!(
        names.last().map(String::as_str),
        Some("Namespace/istio-system")
    );
    assert_eq!(names.len(), 15);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("CustomResourceDefinition/"))
    );

    let (code, stdout, _) = meshctl(&["uninstall", "--crds"]);
    assert_eq!(code, Some(0));
    let crds = documents(&stdout)
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, 14);
}
