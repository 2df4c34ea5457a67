//! The rows `stat` shows on a Kubernetes cluster, from its objects as JSON: Deployments (a
//! pod's through the ReplicaSet that owns it), Services (the pods their selector picks) or
//! Namespaces, each with its pods and how many are in the mesh (the `istio.io/dataplane-mode`
//! label of the pod, else of its namespace). Pure, so the rows are tested without a cluster.

use serde_json::Value;

use super::workloads::{name, namespace};
use crate::operator::stat::{DATAPLANE_MODE, Resource, Target, meshed, sorted};

/// The label a Deployment's controller puts on its ReplicaSets and their pods; a ReplicaSet
/// is named `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The objects the rows are computed over, as listed from the API server.
#[derive(Debug, Default)]
pub struct Objects {
    /// Namespaces (for their dataplane mode).
    pub namespaces: Vec<Value>,
    /// Pods.
    pub pods: Vec<Value>,
    /// Deployments (listed for `stat deploy` only).
    pub deployments: Vec<Value>,
    /// Services (listed for `stat svc` only).
    pub services: Vec<Value>,
}

/// The rows `stat` shows: every object of `resource` in `only_namespace` (all when `None`),
/// or the one called `only_name`, with their pods.
pub fn targets(
    objects: &Objects,
    resource: Resource,
    only_namespace: Option<&str>,
    only_name: Option<&str>,
) -> Vec<Target> {
    let wanted = |object: &Value, ns: &str| {
        only_namespace.is_none_or(|n| n == ns) && only_name.is_none_or(|n| n == name(object))
    };
    let pods: Vec<&Value> = objects.pods.iter().filter(|p| running(p)).collect();
    let target = |ns: &str, object: &str, picks: &dyn Fn(&Value) -> bool| {
        let of_it = pods.iter().filter(|&&pod| picks(pod));
        Target::new(ns, object, of_it.map(|p| in_mesh(&objects.namespaces, p)))
    };
    let found = match resource {
        Resource::Deployment => objects
            .deployments
            .iter()
            .filter(|&d| wanted(d, namespace(d)))
            .map(|d| {
                let (ns, deployment) = (namespace(d), name(d));
                target(ns, deployment, &|pod| {
                    namespace(pod) == ns && deployment_of(pod) == Some(deployment)
                })
            })
            .collect(),
        Resource::Service => objects
            .services
            .iter()
            .filter(|&s| wanted(s, namespace(s)))
            .map(|s| target(namespace(s), name(s), &|pod| selects(s, pod)))
            .collect(),
        Resource::Namespace => objects
            .namespaces
            .iter()
            .filter(|&n| wanted(n, name(n)))
            .map(|n| target(name(n), name(n), &|pod| namespace(pod) == name(n)))
            .collect(),
    };
    sorted(found)
}

/// Whether a pod still runs or is about to (a finished pod is no longer one of its
/// workload's).
fn running(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

/// The Deployment of a pod: the name of the ReplicaSet controlling it, without the
/// `-<pod-template-hash>` its Deployment appended.
pub fn deployment_of(pod: &Value) -> Option<&str> {
    let hash = pod["metadata"]["labels"][POD_TEMPLATE_HASH].as_str()?;
    let owner = pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == "ReplicaSet" && o["controller"] == true)?;
    owner["name"]
        .as_str()?
        .strip_suffix(hash)?
        .strip_suffix('-')
        .filter(|deployment| !deployment.is_empty())
}

/// Whether `service` selects `pod`: same namespace, and a selector whose every label the
/// pod carries (a Service without a selector selects no pod).
fn selects(service: &Value, pod: &Value) -> bool {
    let Some(selector) = service["spec"]["selector"].as_object() else {
        return false;
    };
    namespace(service) == namespace(pod)
        && !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| pod["metadata"]["labels"][key] == *value)
}

/// Whether `pod` is in the mesh, by its own label or its namespace's.
fn in_mesh(namespaces: &[Value], pod: &Value) -> bool {
    let namespace_mode = namespaces
        .iter()
        .find(|n| name(n) == namespace(pod))
        .and_then(|n| n["metadata"]["labels"][DATAPLANE_MODE].as_str());
    meshed(
        pod["metadata"]["labels"][DATAPLANE_MODE].as_str(),
        namespace_mode,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ns: &str, name: &str, labels: Value, replica_set: Option<&str>) -> Value {
        let owners: Vec<Value> = replica_set
            .map(|rs| json!({"kind": "ReplicaSet", "name": rs, "controller": true}))
            .into_iter()
            .collect();
        json!({"metadata": {"namespace": ns, "name": name, "labels": labels,
                            "ownerReferences": owners},
               "status": {"phase": "Running"}})
    }

    fn objects() -> Objects {
        let app = |name: &str| json!({"app": name, "pod-template-hash": "7d9f8"});
        let mut finished = pod("shop", "orders-old", app("orders"), Some("orders-7d9f8"));
        finished["status"]["phase"] = json!("Succeeded");
        Objects {
            namespaces: vec![
                json!({"metadata": {"name": "shop", "labels": {(DATAPLANE_MODE): "ambient"}}}),
                json!({"metadata": {"name": "legacy"}}),
            ],
            pods: vec![
                pod("shop", "orders-a", app("orders"), Some("orders-7d9f8")),
                pod(
                    "shop",
                    "orders-b",
                    json!({"app": "orders", "pod-template-hash": "7d9f8",
                           (DATAPLANE_MODE): "none"}),
                    Some("orders-7d9f8"),
                ),
                finished,
                pod("legacy", "orders-c", app("orders"), Some("orders-7d9f8")),
                pod("shop", "batch", json!({"app": "batch"}), None),
            ],
            deployments: vec![
                json!({"metadata": {"namespace": "shop", "name": "orders"}}),
                json!({"metadata": {"namespace": "shop", "name": "idle"}}),
            ],
            services: vec![
                json!({"metadata": {"namespace": "shop", "name": "orders"},
                       "spec": {"selector": {"app": "orders"}}}),
                json!({"metadata": {"namespace": "shop", "name": "external"}, "spec": {}}),
            ],
        }
    }

    fn counts(targets: &[Target]) -> Vec<(&str, &str, usize, usize)> {
        targets
            .iter()
            .map(|t| (t.namespace.as_str(), t.name.as_str(), t.meshed_pods, t.pods))
            .collect()
    }

    #[test]
    fn deployments_own_their_replica_sets_pods_finished_ones_left_out() {
        let found = targets(&objects(), Resource::Deployment, Some("shop"), None);
        assert_eq!(
            counts(&found),
            [("shop", "idle", 0, 0), ("shop", "orders", 1, 2)]
        );
        let one = targets(&objects(), Resource::Deployment, None, Some("idle"));
        assert_eq!(counts(&one), [("shop", "idle", 0, 0)]);
    }

    #[test]
    fn services_pick_their_selectors_pods_in_their_namespace() {
        let found = targets(&objects(), Resource::Service, None, None);
        assert_eq!(
            counts(&found),
            [("shop", "external", 0, 0), ("shop", "orders", 1, 2)]
        );
    }

    #[test]
    fn namespaces_count_all_their_pods() {
        let found = targets(&objects(), Resource::Namespace, None, None);
        assert_eq!(
            counts(&found),
            [("legacy", "legacy", 0, 1), ("shop", "shop", 2, 3)]
        );
    }

    #[test]
    fn a_pods_deployment_is_its_replica_set_without_the_hash() {
        let labels = json!({"pod-template-hash": "5c6b"});
        assert_eq!(
            deployment_of(&pod("a", "p", labels.clone(), Some("web-v2-5c6b"))),
            Some("web-v2")
        );
        assert_eq!(
            deployment_of(&pod("a", "p", labels.clone(), Some("other"))),
            None
        );
        assert_eq!(deployment_of(&pod("a", "p", labels, None)), None);
    }
}
