//! `stat --prometheus` in Kubernetes mode: the rows' objects and their pods from the API
//! server, as the sandbox's `stat` has them from its own state; the figures come from
//! Prometheus, which meshctl reaches directly at the URL given.

use serde_json::Value;

use super::api::ApiServer;
use super::error::Result;
use super::workloads::{name, namespace};
use crate::sandbox::model::stat::{Resource, Target};

/// The label that puts a namespace or a pod in (`ambient`) or out (`none`) of the mesh.
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// What the rows are made of, as the API server lists them.
#[derive(Debug, Default)]
pub struct Objects {
    /// Namespaces (their labels enrol their pods).
    pub namespaces: Vec<Value>,
    /// Deployments.
    pub deployments: Vec<Value>,
    /// Services.
    pub services: Vec<Value>,
    /// Pods.
    pub pods: Vec<Value>,
}

/// Lists the cluster's namespaces, Deployments, Services and pods: four requests whatever the
/// rows.
pub async fn objects(api: &ApiServer) -> Result<Objects> {
    Ok(Objects {
        namespaces: api.list("/api/v1/namespaces").await?.unwrap_or_default(),
        deployments: api
            .list("/apis/apps/v1/deployments")
            .await?
            .unwrap_or_default(),
        services: api.list("/api/v1/services").await?.unwrap_or_default(),
        pods: api.list("/api/v1/pods").await?.unwrap_or_default(),
    })
}

/// The rows `stat` shows: every object of `resource` in `ns` (all when `None`), or the one
/// called `wanted`, with their pods: those a Deployment's `matchLabels` or a Service's
/// selector picks in its namespace, or all of a namespace's.
pub fn targets(
    objects: &Objects,
    resource: Resource,
    ns: Option<&str>,
    wanted: Option<&str>,
) -> Vec<Target> {
    let target = |ns: &str, object: &str, pods: Vec<&Value>| Target {
        namespace: ns.to_owned(),
        name: object.to_owned(),
        meshed_pods: pods.iter().filter(|p| meshed(objects, p)).count(),
        pods: pods.len(),
    };
    let picked = |object: &&Value| {
        ns.is_none_or(|n| namespace(object) == n) && wanted.is_none_or(|w| name(object) == w)
    };
    let selected = |owner: &Value, selector: &Value| -> Vec<&Value> {
        objects
            .pods
            .iter()
            .filter(|pod| namespace(pod) == namespace(owner) && selects(selector, pod))
            .collect()
    };
    let mut found: Vec<Target> = match resource {
        Resource::Deployment => objects
            .deployments
            .iter()
            .filter(picked)
            .map(|d| {
                let pods = selected(d, &d["spec"]["selector"]["matchLabels"]);
                target(namespace(d), name(d), pods)
            })
            .collect(),
        Resource::Service => objects
            .services
            .iter()
            .filter(picked)
            .map(|s| target(namespace(s), name(s), selected(s, &s["spec"]["selector"])))
            .collect(),
        Resource::Namespace => objects
            .namespaces
            .iter()
            .map(name)
            .filter(|n| ns.is_none_or(|x| x == *n) && wanted.is_none_or(|w| w == *n))
            .map(|n| {
                let pods = objects.pods.iter().filter(|p| namespace(p) == n).collect();
                target(n, n, pods)
            })
            .collect(),
    };
    found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    found
}

/// Whether the label selector `selector` (a map; empty or absent selects nothing, as a
/// Service without one) picks `pod`.
fn selects(selector: &Value, pod: &Value) -> bool {
    selector.as_object().is_some_and(|labels| {
        !labels.is_empty()
            && labels
                .iter()
                .all(|(key, value)| pod["metadata"]["labels"][key] == *value)
    })
}

/// Whether `pod` is in the mesh: its own `istio.io/dataplane-mode` label decides, else its
/// namespace's.
fn meshed(objects: &Objects, pod: &Value) -> bool {
    match pod["metadata"]["labels"][DATAPLANE_MODE].as_str() {
        Some(mode) => mode == "ambient",
        None => objects.namespaces.iter().any(|n| {
            name(n) == namespace(pod) && n["metadata"]["labels"][DATAPLANE_MODE] == "ambient"
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(ns: &str, name: &str, labels: Value, spec: Value) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "labels": labels}, "spec": spec})
    }

    #[test]
    fn rows_take_the_pods_their_selectors_pick_and_the_namespaces_enrolment() {
        let pod = |ns: &str, name: &str, labels: Value| object(ns, name, labels, json!({}));
        let objects = Objects {
            namespaces: vec![
                json!({"metadata": {"name": "shop", "labels": {(DATAPLANE_MODE): "ambient"}}}),
                json!({"metadata": {"name": "legacy"}}),
            ],
            deployments: vec![
                object(
                    "shop",
                    "orders",
                    json!({}),
                    json!({"selector": {"matchLabels": {"app": "orders"}}}),
                ),
                object(
                    "legacy",
                    "orders",
                    json!({}),
                    json!({"selector": {"matchLabels": {"app": "orders"}}}),
                ),
            ],
            services: vec![
                object(
                    "shop",
                    "orders",
                    json!({}),
                    json!({"selector": {"app": "orders"}}),
                ),
                object("shop", "external", json!({}), json!({})),
            ],
            pods: vec![
                pod("shop", "orders-1", json!({"app": "orders"})),
                pod(
                    "shop",
                    "orders-2",
                    json!({"app": "orders", (DATAPLANE_MODE): "none"}),
                ),
                pod("shop", "cache-1", json!({"app": "cache"})),
                pod("legacy", "orders-1", json!({"app": "orders"})),
                pod(
                    "legacy",
                    "orders-2",
                    json!({"app": "orders", (DATAPLANE_MODE): "ambient"}),
                ),
            ],
        };
        let counts = |found: Vec<Target>| -> Vec<(String, String, usize, usize)> {
            found
                .into_iter()
                .map(|t| (t.namespace, t.name, t.meshed_pods, t.pods))
                .collect()
        };
        let row =
            |ns: &str, name: &str, meshed, pods| (ns.to_owned(), name.to_owned(), meshed, pods);
        assert_eq!(
            counts(targets(&objects, Resource::Deployment, None, None)),
            [row("legacy", "orders", 1, 2), row("shop", "orders", 1, 2)]
        );
        assert_eq!(
            counts(targets(&objects, Resource::Service, Some("shop"), None)),
            [row("shop", "external", 0, 0), row("shop", "orders", 1, 2)]
        );
        assert_eq!(
            counts(targets(&objects, Resource::Namespace, None, Some("shop"))),
            [row("shop", "shop", 2, 3)]
        );
        assert!(targets(&objects, Resource::Deployment, Some("shop"), Some("cache")).is_empty());
    }
}
