//! Objects the controller keeps in the cluster (Kubernetes mode), as Istio's gateway
//! deployment and namespace controllers do:
//!
//! - for every Gateway of class `istio-waypoint`: its waypoint's ServiceAccount, Deployment and
//!   Service ([`waypoints`], rendered from `manifests/waypoint-template.yaml`), owned by the
//!   Gateway so Kubernetes deletes them with it, and the Gateway's status ([`gateway_status`]:
//!   `Accepted`, `Programmed` and the Service's address);
//! - the trust bundle ConfigMap `istio-ca-root-cert` in every namespace, which waypoints (and
//!   Istio's proxies) mount to verify the controller.
//!
//! Everything is written with server-side apply (field manager [`FIELD_MANAGER`](crate::field_manager::FIELD_MANAGER)), and only
//! when it differs from what this process last wrote; a periodic resync re-applies everything,
//! restoring objects someone deleted or edited. A failed write is retried with backoff, while
//! the rest proceeds. Only the leader among the controller's replicas writes.

pub mod gateway_status;
pub mod waypoints;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::ca::secret_store;
use crate::field_manager::FIELD_MANAGER;
use crate::leader::Leadership;
use crate::model::{Index, Object, ObjectKey};
use crate::status::now_rfc3339;
pub use waypoints::{WaypointGateway, WaypointRuntime};

/// Namespaces that get no trust bundle, as Istio skips them.
pub const SKIPPED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// What the deployer writes, and how often it re-applies everything.
#[derive(Clone, Debug)]
pub struct DeploySettings {
    /// How waypoints run (image, controller address, mounts).
    pub runtime: WaypointRuntime,
    /// The mesh roots (PEM) published in every namespace.
    pub roots_pem: Vec<String>,
    /// The controller's namespace, where the roots are published first.
    pub root_namespace: String,
    /// Re-apply everything this often.
    pub resync: Duration,
    /// First wait after a failed write; doubles with every failed retry, up to
    /// [`DeploySettings::resync`].
    pub retry: Duration,
}

/// One object to apply: where it lives and its content.
#[derive(Clone, Debug, PartialEq)]
struct Desired {
    api: ApiResource,
    namespace: String,
    name: String,
    body: Value,
}

/// Where an applied object is remembered: API version, kind, namespace, name.
type AppliedKey = (String, String, String, String);

/// What was last written successfully, to write only changes.
#[derive(Default)]
struct Written {
    objects: BTreeMap<AppliedKey, Value>,
    /// Gateway status by (namespace, name), without transition times.
    statuses: BTreeMap<(String, String), Value>,
}

/// Keeps waypoints and trust bundles (with the roots `roots` carries, which follow a root
/// rotation's every phase) in line with `index` until `index` closes, writing only while
/// `leadership` says this replica leads. On becoming leader it first publishes the
/// roots in the root namespace (node proxies need them before anything else), then applies
/// everything again: the previous leader's writes are not this replica's to trust.
pub async fn run(
    client: kube::Client,
    mut index: watch::Receiver<Arc<Index>>,
    mut settings: DeploySettings,
    mut roots: watch::Receiver<Vec<String>>,
    mut leadership: Leadership,
) {
    let mut written = Written::default();
    let mut roots_published = false;
    let mut roots_open = true;
    let mut was_leading = false;
    let mut resync = tokio::time::interval(settings.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    // The wait before retrying failed writes; `None` while nothing is failing.
    let mut retry: Option<Duration> = None;
    // The first round runs at once (the roots are wanted early), the next on a change.
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::select! {
                changed = index.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = leadership.changed() => {}
                changed = roots.changed(), if roots_open => match changed {
                    Ok(()) => {
                        settings.roots_pem = roots.borrow_and_update().clone();
                        roots_published = false;
                    }
                    // The roots stay as they were last published.
                    Err(_) => roots_open = false,
                },
                _ = resync.tick() => written = Written::default(),
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
            }
        }
        let leading = leadership.is_leader();
        if leading && !was_leading {
            written = Written::default();
            roots_published = false;
        }
        was_leading = leading;
        if !leading {
            retry = None;
            continue;
        }
        let mut errors = 0;
        if !roots_published {
            match secret_store::publish_roots(
                client.clone(),
                &settings.root_namespace,
                &settings.roots_pem,
            )
            .await
            {
                Ok(()) => roots_published = true,
                Err(e) => {
                    errors += 1;
                    tracing::warn!(error = %e, "publishing the trust bundle failed; will retry");
                }
            }
        }
        let snapshot = index.borrow_and_update().clone();
        // An empty index is the state before the first list: it must not look like "no
        // Gateways" (nothing is deleted here anyway, but nothing is worth writing either).
        if !snapshot.is_empty() {
            errors += sync(&client, &snapshot, &settings, &mut written, &leadership).await;
        }
        retry = (errors > 0).then(|| match retry {
            None => settings.retry,
            Some(previous) => (previous * 2).min(settings.resync),
        });
    }
}

/// Applies what differs from `written`; returns how many writes failed.
async fn sync(
    client: &kube::Client,
    index: &Index,
    settings: &DeploySettings,
    written: &mut Written,
    leadership: &Leadership,
) -> usize {
    let gateways = waypoints::gateways(index);
    let (objects, problems) = desired_objects(index, &gateways, settings);
    for problem in &problems {
        tracing::warn!("{problem}");
    }
    let mut errors = 0;
    let keys: BTreeSet<AppliedKey> = objects.iter().map(applied_key).collect();
    // Forget what is no longer wanted, so it is applied again if it comes back.
    written.objects.retain(|k, _| keys.contains(k));
    for object in objects {
        if !leadership.is_leader() {
            return errors;
        }
        let key = applied_key(&object);
        if written.objects.get(&key) == Some(&object.body) {
            continue;
        }
        match apply(client, &object).await {
            Ok(()) => {
                tracing::info!(
                    kind = %object.api.kind, namespace = %object.namespace, name = %object.name,
                    "applied"
                );
                written.objects.insert(key, object.body);
            }
            Err(e) => {
                errors += 1;
                tracing::warn!(
                    kind = %object.api.kind, namespace = %object.namespace, name = %object.name,
                    error = %e, "apply failed; will retry"
                );
            }
        }
    }

    written.statuses.retain(|(ns, name), _| {
        gateways
            .iter()
            .any(|g| &g.namespace == ns && &g.name == name)
    });
    let now = now_rfc3339();
    for gateway in &gateways {
        if !leadership.is_leader() {
            return errors;
        }
        let service = index
            .get(&ObjectKey::new(
                "Service",
                &gateway.namespace,
                &gateway.name,
            ))
            .and_then(|stored| match &stored.object {
                Object::Service(s) => Some(s),
                _ => None,
            });
        let status = gateway_status::desired(gateway, service, &now);
        let key = (gateway.namespace.clone(), gateway.name.clone());
        let comparable = gateway_status::comparable(&status);
        if written.statuses.get(&key) == Some(&comparable) {
            continue;
        }
        match write_gateway_status(client, gateway, status).await {
            Ok(()) => {
                written.statuses.insert(key, comparable);
            }
            Err(e) => {
                errors += 1;
                tracing::warn!(
                    namespace = %gateway.namespace, gateway = %gateway.name, error = %e,
                    "writing the Gateway status failed; will retry"
                );
            }
        }
    }
    errors
}

/// Every object to apply for `index` and its waypoint `gateways`, and why some could not be
/// rendered.
fn desired_objects(
    index: &Index,
    gateways: &[WaypointGateway],
    settings: &DeploySettings,
) -> (Vec<Desired>, Vec<String>) {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for gateway in gateways {
        match waypoints::render(gateway, &settings.runtime) {
            Ok(rendered) => objects.extend(rendered.into_iter().filter_map(desired)),
            Err(e) => problems.push(format!(
                "Gateway {}/{}: {e}",
                gateway.namespace, gateway.name
            )),
        }
    }
    for (_, namespace) in index.namespaces() {
        let name = namespace.metadata.name.as_str();
        if SKIPPED_NAMESPACES.contains(&name) {
            continue;
        }
        // The typed ConfigMap serializes with its apiVersion and kind.
        let configmap = secret_store::root_configmap(name, &settings.roots_pem);
        if let Ok(body) = serde_json::to_value(configmap) {
            objects.extend(desired(body));
        }
    }
    (objects, problems)
}

/// A rendered object with its API coordinates; `None` for one lacking them.
fn desired(body: Value) -> Option<Desired> {
    let api_version = body.get("apiVersion")?.as_str()?;
    let kind = body.get("kind")?.as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    Some(Desired {
        api: ApiResource::from_gvk_with_plural(&gvk, &plural),
        namespace: body.pointer("/metadata/namespace")?.as_str()?.to_string(),
        name: body.pointer("/metadata/name")?.as_str()?.to_string(),
        body,
    })
}

fn applied_key(object: &Desired) -> AppliedKey {
    (
        object.api.api_version.clone(),
        object.api.kind.clone(),
        object.namespace.clone(),
        object.name.clone(),
    )
}

async fn apply(client: &kube::Client, object: &Desired) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &object.namespace, &object.api);
    api.patch(
        &object.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&object.body),
    )
    .await
    .map(|_| ())
}

async fn write_gateway_status(
    client: &kube::Client,
    gateway: &WaypointGateway,
    status: Value,
) -> Result<(), kube::Error> {
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "gateways");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &gateway.namespace, &resource);
    // A merge patch: the waypoint class is ours, so its status is entirely ours to write.
    api.patch_status(
        &gateway.name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_documents;

    fn index(yaml: &str) -> Index {
        let parsed = parse_documents("test.yaml", yaml, false);
        Index::from_origins(vec![("test.yaml".into(), parsed.objects, parsed.problems)])
    }

    fn settings() -> DeploySettings {
        DeploySettings {
            runtime: WaypointRuntime::kubernetes("img:1", "istiod.istio-system.svc:15012"),
            roots_pem: vec!["-----BEGIN CERTIFICATE-----\n".into()],
            root_namespace: "istio-system".into(),
            resync: Duration::from_secs(300),
            retry: Duration::from_secs(1),
        }
    }

    const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, uid: u-1}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
";

    #[test]
    fn waypoint_objects_and_a_trust_bundle_per_namespace() {
        let index = index(CLUSTER);
        let (objects, problems) =
            desired_objects(&index, &waypoints::gateways(&index), &settings());
        assert!(problems.is_empty(), "{problems:?}");
        let summary: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{} {} {}/{}",
                    o.api.api_version, o.api.plural, o.namespace, o.name
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "v1 serviceaccounts shop/waypoint",
                "apps/v1 deployments shop/waypoint",
                "v1 services shop/waypoint",
                "v1 configmaps shop/istio-ca-root-cert",
            ]
        );
        let configmap = &objects[3].body;
        assert_eq!(
            configmap["data"]["root-cert.pem"],
            "-----BEGIN CERTIFICATE-----\n"
        );
    }

    #[test]
    fn a_gateway_that_cannot_be_rendered_is_reported_not_applied() {
        let mut settings = settings();
        settings.runtime.image = "bad image".into();
        let index = index(CLUSTER);
        let (objects, problems) = desired_objects(&index, &waypoints::gateways(&index), &settings);
        assert_eq!(objects.len(), 1, "only the trust bundle");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("shop/waypoint"), "{problems:?}");
    }
}
