//! The objects behind a waypoint: `manifests/waypoint-template.yaml`, compiled in and rendered
//! per Gateway of class `istio-waypoint`. The controller applies the result in Kubernetes; the
//! sandbox stores the same objects with its own paths, so both run exactly what the manifest
//! says.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::{Gateway, Index};
// The translation decides which Gateways are waypoints and how their pods are found: the
// objects deployed for them follow the same names.
pub use crate::translate::{GATEWAY_NAME_LABEL, HBONE_PORT, WAYPOINT_CLASS};

/// The template, as shipped in `manifests/`.
pub const TEMPLATE: &str = include_str!("../../../manifests/waypoint-template.yaml");
/// Label marking objects managed for a Gateway, as Istio sets it.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// Value of [`MANAGED_LABEL`] for mesh (waypoint) gateways.
pub const MANAGED_VALUE: &str = "istio.io-mesh-controller";
/// Where the Kubernetes template mounts the mesh roots.
pub const KUBERNETES_ROOT_CERT: &str = "/var/run/secrets/istio/root-cert.pem";
/// Where the Kubernetes template mounts the projected token.
pub const KUBERNETES_TOKEN_FILE: &str = "/var/run/secrets/tokens/istio-token";

/// A Gateway of class `istio-waypoint`, reduced to what its objects depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaypointGateway {
    /// Namespace.
    pub namespace: String,
    /// Name (also the name of its objects and service account).
    pub name: String,
    /// UID, for the owner references.
    pub uid: String,
    /// `metadata.generation`, for status conditions.
    pub generation: i64,
    /// Listener names, for their status entries.
    pub listeners: Vec<String>,
    /// `spec.infrastructure.labels`, propagated to the objects and pods.
    pub labels: BTreeMap<String, String>,
    /// `spec.infrastructure.annotations`, propagated likewise.
    pub annotations: BTreeMap<String, String>,
}

impl WaypointGateway {
    /// `None` unless `gateway` is of the waypoint class.
    pub fn from_gateway(gateway: &Gateway) -> Option<Self> {
        if gateway.spec.gateway_class_name != WAYPOINT_CLASS {
            return None;
        }
        let meta = &gateway.metadata;
        let infrastructure = gateway.spec.infrastructure.clone().unwrap_or_default();
        Some(Self {
            namespace: if meta.namespace.is_empty() {
                "default".into()
            } else {
                meta.namespace.clone()
            },
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            generation: meta.generation,
            listeners: gateway
                .spec
                .listeners
                .iter()
                .map(|l| l.name.clone())
                .collect(),
            labels: infrastructure.labels,
            annotations: infrastructure.annotations,
        })
    }

    /// Reads a Gateway given as JSON (any kind of object is accepted; only waypoint
    /// Gateways yield one).
    pub fn from_json(value: &Value) -> Option<Self> {
        if value.get("kind").and_then(Value::as_str) != Some("Gateway") {
            return None;
        }
        Gateway::deserialize(value)
            .ok()
            .and_then(|g| Self::from_gateway(&g))
    }

    /// `<name>.<namespace>.svc.cluster.local`: the waypoint Service's host.
    pub fn service_host(&self) -> String {
        crate::translate::service_hostname(&self.name, &self.namespace)
    }
}

/// Every waypoint Gateway of `index`, ordered by namespace and name.
pub fn gateways(index: &Index) -> Vec<WaypointGateway> {
    let mut all: Vec<WaypointGateway> = index
        .gateways()
        .filter_map(|(_, g)| WaypointGateway::from_gateway(g))
        .collect();
    all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    all
}

/// How the rendered waypoint reaches the controller and what it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaypointRuntime {
    /// Container image.
    pub image: String,
    /// `host:port` of the controller's xDS endpoint.
    pub controller: String,
    /// Path of the mesh roots inside the waypoint.
    pub root_cert: String,
    /// Path of the waypoint's token.
    pub token_file: String,
}

impl WaypointRuntime {
    /// The Kubernetes runtime: `image`, the controller at `controller`, the roots and token
    /// where the template mounts them.
    pub fn kubernetes(image: &str, controller: &str) -> Self {
        Self {
            image: image.into(),
            controller: controller.into(),
            root_cert: KUBERNETES_ROOT_CERT.into(),
            token_file: KUBERNETES_TOKEN_FILE.into(),
        }
    }
}

/// Why a waypoint's objects could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A value would not be a plain YAML scalar (or a valid name).
    #[error("waypoint template: {variable} value {value:?} is not allowed")]
    BadValue {
        /// The template variable.
        variable: &'static str,
        /// The refused value.
        value: String,
    },
    /// The rendered template is not valid YAML.
    #[error("waypoint template: {0}")]
    Template(#[from] serde_yaml_ng::Error),
}

/// True for values that are plain YAML scalars and safe in a path or image reference.
fn plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | '@'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/')
}

/// True for Kubernetes object names (RFC 1123 subdomains).
fn object_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A template variable: its name, value, and the check the value must pass.
type Variable<'a> = (&'static str, &'a str, fn(&str) -> bool);

/// The ServiceAccount, Deployment and Service of `gateway`'s waypoint, in that order, as
/// JSON objects ready to apply: the template with its variables filled, the Gateway's
/// infrastructure labels and annotations added (the template's win) and the Gateway as owner.
pub fn render(
    gateway: &WaypointGateway,
    runtime: &WaypointRuntime,
) -> Result<Vec<Value>, RenderError> {
    let variables: [Variable; 6] = [
        ("GATEWAY", &gateway.name, object_name),
        ("NAMESPACE", &gateway.namespace, object_name),
        ("IMAGE", &runtime.image, plain),
        ("CONTROLLER", &runtime.controller, plain),
        ("ROOT_CERT", &runtime.root_cert, plain),
        ("TOKEN_FILE", &runtime.token_file, plain),
    ];
    let mut text = TEMPLATE.to_string();
    for (variable, value, allowed) in variables {
        if !allowed(value) {
            return Err(RenderError::BadValue {
                variable,
                value: value.to_string(),
            });
        }
        text = text.replace(&format!("${{{variable}}}"), value);
    }
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Value::deserialize(document)?;
        if value.is_object() {
            objects.push(decorate(value, gateway));
        }
    }
    Ok(objects)
}

/// Adds the infrastructure labels and annotations and the owner reference.
fn decorate(mut object: Value, gateway: &WaypointGateway) -> Value {
    merge_map(&mut object, "/metadata", "labels", &gateway.labels);
    merge_map(
        &mut object,
        "/metadata",
        "annotations",
        &gateway.annotations,
    );
    merge_map(
        &mut object,
        "/spec/template/metadata",
        "labels",
        &gateway.labels,
    );
    merge_map(
        &mut object,
        "/spec/template/metadata",
        "annotations",
        &gateway.annotations,
    );
    if let Some(meta) = object
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
    {
        meta.insert(
            "ownerReferences".into(),
            json!([{
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": gateway.name,
                "uid": gateway.uid,
            }]),
        );
    }
    object
}

/// Adds `extra` under `<parent>/<key>` without overriding what is there; no-op when `parent`
/// does not exist (the template decides which objects have a pod template).
fn merge_map(object: &mut Value, parent: &str, key: &str, extra: &BTreeMap<String, String>) {
    if extra.is_empty() {
        return;
    }
    let Some(parent) = object.pointer_mut(parent).and_then(Value::as_object_mut) else {
        return;
    };
    let map = parent.entry(key).or_insert_with(|| json!({}));
    if let Some(map) = map.as_object_mut() {
        for (k, v) in extra {
            map.entry(k.clone()).or_insert_with(|| json!(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> WaypointGateway {
        WaypointGateway::from_json(&json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "shop", "uid": "u-1", "generation": 3},
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
                "infrastructure": {
                    "labels": {"team": "shop", "gateway.networking.k8s.io/gateway-name": "x"},
                    "annotations": {"owner": "payments"},
                },
            },
        }))
        .expect("a waypoint gateway")
    }

    fn runtime() -> WaypointRuntime {
        WaypointRuntime::kubernetes(
            "ghcr.io/ambient-mesh/waypoint:0.1.0",
            "istiod.istio-system.svc:15012",
        )
    }

    #[test]
    fn only_the_waypoint_class_counts() {
        let mut other = json!({"kind": "Gateway", "metadata": {"name": "in", "namespace": "shop"},
                               "spec": {"gatewayClassName": "istio"}});
        assert_eq!(WaypointGateway::from_json(&other), None);
        other["spec"]["gatewayClassName"] = json!(WAYPOINT_CLASS);
        assert!(WaypointGateway::from_json(&other).is_some());
        other["kind"] = json!("Service");
        assert_eq!(WaypointGateway::from_json(&other), None);
        let g = gateway();
        assert_eq!((g.uid.as_str(), g.generation), ("u-1", 3));
        assert_eq!(g.listeners, ["mesh"]);
        assert_eq!(g.service_host(), "waypoint.shop.svc.cluster.local");
    }

    #[test]
    fn renders_account_deployment_and_service_owned_by_the_gateway() {
        let objects = render(&gateway(), &runtime()).expect("rendered");
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
        for o in &objects {
            assert_eq!(o["metadata"]["name"], "waypoint");
            assert_eq!(o["metadata"]["namespace"], "shop");
            assert_eq!(o["metadata"]["labels"][MANAGED_LABEL], MANAGED_VALUE);
            assert_eq!(o["metadata"]["labels"]["team"], "shop");
            // The template's own labels win over infrastructure labels.
            assert_eq!(o["metadata"]["labels"][GATEWAY_NAME_LABEL], "waypoint");
            assert_eq!(o["metadata"]["annotations"]["owner"], "payments");
            let owner = &o["metadata"]["ownerReferences"][0];
            assert_eq!(
                (&owner["kind"], &owner["name"], &owner["uid"]),
                (&json!("Gateway"), &json!("waypoint"), &json!("u-1"))
            );
        }
        let deployment = &objects[1];
        let pod = &deployment["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
        assert_eq!(pod["metadata"]["labels"]["team"], "shop");
        assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
        let container = &pod["spec"]["containers"][0];
        assert_eq!(container["image"], "ghcr.io/ambient-mesh/waypoint:0.1.0");
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(args.contains(&"--controller=istiod.istio-system.svc:15012"));
        assert!(args.contains(&"--root-cert=/var/run/secrets/istio/root-cert.pem"));
        assert!(args.contains(&"--token-file=/var/run/secrets/tokens/istio-token"));
        assert!(args.contains(&"--namespace=shop"));
        let service = &objects[2];
        assert_eq!(service["spec"]["selector"][GATEWAY_NAME_LABEL], "waypoint");
        assert_eq!(service["spec"]["ports"][1]["port"], HBONE_PORT);
        assert_eq!(service["spec"]["ports"][1]["appProtocol"], "all");
        assert!(
            !serde_json::to_string(&objects)
                .expect("json")
                .contains("${")
        );
    }

    #[test]
    fn values_that_could_break_the_yaml_are_refused() {
        let mut g = gateway();
        g.name = "a: b".into();
        let e = render(&g, &runtime()).expect_err("refused");
        assert!(e.to_string().contains("GATEWAY"), "{e}");
        let mut r = runtime();
        r.image = "x\n  evil: true".into();
        assert!(matches!(
            render(&gateway(), &r),
            Err(RenderError::BadValue {
                variable: "IMAGE",
                ..
            })
        ));
        r.image = "-x".into();
        assert!(render(&gateway(), &r).is_err());
    }
}
