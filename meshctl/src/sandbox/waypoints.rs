//! Waypoint deployment: what Istio's gateway deployment controller does for
//! a Gateway of class `istio-waypoint`, done by the sandbox. For each such
//! Gateway it keeps three objects beside it, owned by it (removed with it):
//!
//! - ServiceAccount `<gateway>`: the waypoint's identity
//!   `spiffe://cluster.local/ns/<ns>/sa/<gateway>`;
//! - Deployment `<gateway>` (one replica, pods `<gateway>-<hash>-<suffix>`)
//!   running the `waypoint` binary, its pods labelled
//!   `gateway.networking.k8s.io/gateway-name: <gateway>` (how the controller
//!   knows they are the waypoint) and `istio.io/dataplane-mode: none` (the
//!   waypoint speaks HBONE itself and must not be captured);
//! - Service `<gateway>` with ports `status-port` 15021 and `mesh` 15008
//!   selecting those pods: the controller points ztunnels at the waypoint
//!   through the Service named after the Gateway.
//!
//! The pure part (which objects, with which content) is unit-tested; the
//! sandbox part stores them and issues the waypoint's bearer token.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::cluster::Sandbox;
use super::control::{Layout, XDS_PORT};
use super::manifest::Object;
use super::model::Cluster;
use super::{Result, tokens};

/// Gateway class that asks for a waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// Label naming the Gateway a generated object (or pod) belongs to.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Label naming the Gateway's class on generated objects.
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";
/// Label marking objects managed for a Gateway, as Istio sets it.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// Value of [`MANAGED_LABEL`] for mesh (waypoint) gateways.
pub const MANAGED_VALUE: &str = "istio.io-mesh-controller";
/// Label choosing a pod's data plane; `none` keeps the waypoint uncaptured.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The waypoint's HBONE port.
pub const HBONE_PORT: u16 = 15008;
/// The waypoint's Prometheus port (`/metrics`).
pub const METRICS_PORT: u16 = 15020;
/// The waypoint's readiness port (`/healthz/ready`).
pub const READY_PORT: u16 = 15021;
/// Name of the waypoint container, as in Istio's template.
pub const CONTAINER: &str = "istio-proxy";

/// A Gateway of class `istio-waypoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointGateway {
    /// Namespace.
    pub namespace: String,
    /// Gateway name (also the name of its Deployment, Service and service account).
    pub name: String,
    /// The Gateway's UID, for the generated objects' owner references.
    pub uid: String,
    /// `spec.infrastructure.labels`: propagated to generated objects.
    pub labels: BTreeMap<String, String>,
    /// `spec.infrastructure.annotations`: propagated to generated objects.
    pub annotations: BTreeMap<String, String>,
}

impl WaypointGateway {
    /// Reads a Gateway object; `None` unless it is of the waypoint class.
    pub fn from_object(object: &Object) -> Option<WaypointGateway> {
        if object.kind != "Gateway" || !object.api_version.starts_with("gateway.networking.k8s.io/")
        {
            return None;
        }
        let v = &object.value;
        if v.pointer("/spec/gatewayClassName").and_then(Value::as_str) != Some(WAYPOINT_CLASS) {
            return None;
        }
        let map = |path: &str| -> BTreeMap<String, String> {
            v.pointer(path)
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_default()
        };
        Some(WaypointGateway {
            namespace: object.namespace.clone()?,
            name: object.name.clone(),
            uid: v
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            labels: map("/spec/infrastructure/labels"),
            annotations: map("/spec/infrastructure/annotations"),
        })
    }

    /// `spiffe://cluster.local/ns/<ns>/sa/<gateway>`.
    pub fn identity(&self) -> String {
        tokens::waypoint_identity(&self.namespace, &self.name)
    }

    /// Labels every generated object carries: the infrastructure labels,
    /// then the ones that tie it to the Gateway (which win).
    fn object_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        labels.insert(GATEWAY_NAME_LABEL.into(), self.name.clone());
        labels.insert(GATEWAY_CLASS_LABEL.into(), WAYPOINT_CLASS.into());
        labels.insert(MANAGED_LABEL.into(), MANAGED_VALUE.into());
        labels
    }

    fn metadata(&self, name_labels: BTreeMap<String, String>) -> Value {
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "labels": name_labels,
            "annotations": self.annotations,
            "ownerReferences": [{
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "name": self.name,
                "uid": self.uid,
            }],
        })
    }

    fn object(&self, api_version: &str, kind: &str, value: Value) -> Object {
        Object {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some(self.namespace.clone()),
            name: self.name.clone(),
            source: format!("(waypoint for Gateway {}/{})", self.namespace, self.name),
            value,
        }
    }

    /// The waypoint command line: the controller at `control_ip`, the
    /// sandbox's root certificate and this waypoint's token.
    pub fn argv(&self, layout: &Layout, control_ip: Ipv4Addr) -> Vec<String> {
        let path = |p: std::path::PathBuf| p.display().to_string();
        vec![
            "waypoint".into(),
            "--namespace".into(),
            self.namespace.clone(),
            "--name".into(),
            self.name.clone(),
            "--controller".into(),
            format!("{control_ip}:{XDS_PORT}"),
            "--root-cert".into(),
            path(layout.root_cert()),
            "--token-file".into(),
            path(layout.waypoint_token_file(&self.namespace, &self.name)),
            "--service-account".into(),
            self.name.clone(),
            "--hbone-addr".into(),
            format!("0.0.0.0:{HBONE_PORT}"),
            "--metrics-addr".into(),
            format!("0.0.0.0:{METRICS_PORT}"),
            "--ready-addr".into(),
            format!("0.0.0.0:{READY_PORT}"),
        ]
    }

    /// ServiceAccount, Deployment and Service for this waypoint.
    pub fn objects(&self, layout: &Layout, control_ip: Ipv4Addr) -> Vec<Object> {
        let labels = self.object_labels();
        let service_account = self.object(
            "v1",
            "ServiceAccount",
            json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": self.metadata(labels.clone()),
            }),
        );

        let mut pod_labels = labels.clone();
        pod_labels.insert("sidecar.istio.io/inject".into(), "false".into());
        pod_labels.insert(DATAPLANE_MODE_LABEL.into(), "none".into());
        pod_labels.insert("service.istio.io/canonical-name".into(), self.name.clone());
        pod_labels.insert(
            "service.istio.io/canonical-revision".into(),
            "latest".into(),
        );
        let mut pod_annotations = self.annotations.clone();
        pod_annotations.insert("prometheus.io/scrape".into(), "true".into());
        pod_annotations.insert("prometheus.io/port".into(), METRICS_PORT.to_string());
        pod_annotations.insert("prometheus.io/path".into(), "/metrics".into());
        let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
        let deployment = self.object(
            "apps/v1",
            "Deployment",
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": self.metadata(labels.clone()),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {GATEWAY_NAME_LABEL: self.name}},
                    "template": {
                        "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                        "spec": {
                            "serviceAccountName": self.name,
                            "containers": [{
                                "name": CONTAINER,
                                "command": self.argv(layout, control_ip),
                                // Declared ports are what the sandbox waits
                                // for before it calls the pod ready.
                                "ports": [
                                    {"name": "mesh", "containerPort": HBONE_PORT, "protocol": "TCP"},
                                    {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                                    {"name": "status-port", "containerPort": READY_PORT, "protocol": "TCP"},
                                ],
                                "env": [
                                    field("POD_NAME", "metadata.name"),
                                    field("POD_NAMESPACE", "metadata.namespace"),
                                    field("INSTANCE_IP", "status.podIP"),
                                    field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                                    field("NODE_NAME", "spec.nodeName"),
                                ],
                            }],
                        },
                    },
                },
            }),
        );

        let mut service_meta = self.metadata(labels);
        if let Some(a) = service_meta
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            // Istio prefers the closest waypoint replica.
            a.insert(
                "networking.istio.io/traffic-distribution".into(),
                json!("PreferClose"),
            );
        }
        let service = self.object(
            "v1",
            "Service",
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": service_meta,
                "spec": {
                    "type": "ClusterIP",
                    "selector": {GATEWAY_NAME_LABEL: self.name},
                    "ports": [
                        {"name": "status-port", "port": READY_PORT, "protocol": "TCP", "appProtocol": "tcp"},
                        {"name": "mesh", "port": HBONE_PORT, "protocol": "TCP", "appProtocol": "all"},
                    ],
                },
            }),
        );
        vec![service_account, deployment, service]
    }
}

/// Every waypoint Gateway of the cluster, in apply order.
pub fn gateways(cluster: &Cluster) -> Vec<WaypointGateway> {
    cluster
        .objects
        .iter()
        .filter_map(|a| WaypointGateway::from_object(&a.object))
        .collect()
}

/// True for an object generated for a waypoint Gateway (label and owner).
pub fn is_generated(object: &Object) -> bool {
    let managed = object.labels().get(MANAGED_LABEL).map(String::as_str) == Some(MANAGED_VALUE);
    let owned = object
        .value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["kind"] == "Gateway"));
    managed && owned
}

/// What the objects should be: `(to store, to remove)`. Generated objects
/// whose Gateway is gone (or no longer a waypoint) are removed; an object
/// the user wrote under a generated name is replaced, as Istio does.
pub fn plan(
    cluster: &Cluster,
    layout: &Layout,
    control_ip: Ipv4Addr,
) -> (Vec<Object>, Vec<Object>) {
    let wanted: Vec<Object> = gateways(cluster)
        .iter()
        .flat_map(|g| g.objects(layout, control_ip))
        .collect();
    let stale = cluster
        .objects
        .iter()
        .map(|a| &a.object)
        .filter(|o| is_generated(o) && !wanted.iter().any(|w| w.same_identity(o)))
        .cloned()
        .collect();
    (wanted, stale)
}

impl Sandbox {
    /// Brings the waypoint objects and tokens in line with the Gateways:
    /// stores the generated ServiceAccount, Deployment and Service of every
    /// waypoint Gateway, removes those of Gateways that are gone, and issues
    /// (or revokes) the waypoints' tokens. A sandbox without a control plane
    /// runs no waypoints: nothing could configure them.
    pub(super) fn sync_waypoints(&mut self) -> Result<()> {
        let Some(control_ip) = self.cluster.control.as_ref().map(|c| c.ip) else {
            return Ok(());
        };
        let layout = self.layout();
        let gateways = gateways(&self.cluster);
        let binary = self.cfg.bin_dir.join("waypoint");
        if !gateways.is_empty() && !binary.is_file() {
            self.say(format!(
                "warning: {} not found: waypoint pods will fail (build it with \
                 `cargo build -p waypoint`, or point --bin-dir at the folder holding it)",
                binary.display()
            ));
        }
        // The token exists before the pod that reads it starts.
        let nodes: Vec<String> = self.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let pairs: Vec<(String, String)> = gateways
            .iter()
            .map(|g| (g.namespace.clone(), g.name.clone()))
            .collect();
        tokens::sync_waypoints(&layout, &nodes, &pairs)?;

        let (wanted, stale) = plan(&self.cluster, &layout, control_ip);
        let now = super::state::now();
        for object in stale {
            self.cluster
                .objects
                .retain(|a| !a.object.same_identity(&object));
            self.say(format!("{} deleted (waypoint)", object.resource_name()));
        }
        for mut object in wanted {
            if object.kind == "Service" {
                self.assign_cluster_ip(&mut object)?;
            }
            let name = object.resource_name();
            let change = self.store(object, now);
            if change != super::cluster::Change::Unchanged {
                self.say(format!("{name} {} (waypoint)", change.as_str()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::control::CONTROL_IP;
    use crate::sandbox::ids::tests::Counter;
    use crate::sandbox::manifest::{DeploymentObject, parse_documents};
    use crate::sandbox::model::Applied;
    use crate::sandbox::validate::{validate_deployment, validate_service};
    use std::path::Path;

    const GATEWAYS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, uid: u-1}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
  infrastructure:
    labels: {team: shop}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

    fn layout() -> Layout {
        Layout::new(Path::new("/run/meshctl/t"), Path::new("/opt/bin"))
    }

    fn cluster(yaml: &str) -> Cluster {
        let mut c = Cluster::new("t", 2, 0);
        for object in parse_documents(yaml, "t.yaml").unwrap() {
            c.objects.push(Applied { object, created: 0 });
        }
        c
    }

    fn find<'a>(objects: &'a [Object], kind: &str) -> &'a Object {
        objects.iter().find(|o| o.kind == kind).unwrap()
    }

    #[test]
    fn only_waypoint_class_gateways_get_a_waypoint() {
        let c = cluster(GATEWAYS);
        let gws = gateways(&c);
        assert_eq!(gws.len(), 1);
        assert_eq!(
            (gws[0].namespace.as_str(), gws[0].name.as_str()),
            ("shop", "waypoint")
        );
        assert_eq!(gws[0].uid, "u-1");
        assert_eq!(
            gws[0].identity(),
            "spiffe://cluster.local/ns/shop/sa/waypoint"
        );
    }

    #[test]
    fn generated_objects_match_what_the_controller_looks_for() {
        let gw = &gateways(&cluster(GATEWAYS))[0];
        let objects = gw.objects(&layout(), CONTROL_IP);
        let kinds: Vec<&str> = objects.iter().map(|o| o.kind.as_str()).collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment", "Service"]);
        assert!(objects.iter().all(|o| o.name == "waypoint"));
        assert!(
            objects
                .iter()
                .all(|o| o.namespace.as_deref() == Some("shop"))
        );
        assert!(objects.iter().all(is_generated));
        for o in &objects {
            assert_eq!(
                o.labels()["team"],
                "shop",
                "infrastructure labels propagate"
            );
            assert_eq!(o.value["metadata"]["ownerReferences"][0]["uid"], "u-1");
        }

        let svc = find(&objects, "Service");
        assert_eq!(
            svc.value["spec"]["selector"][GATEWAY_NAME_LABEL],
            "waypoint"
        );
        let ports = &svc.value["spec"]["ports"];
        assert_eq!(ports[0]["name"], "status-port");
        assert_eq!(ports[0]["port"], 15021);
        assert_eq!(ports[0]["appProtocol"], "tcp");
        assert_eq!(ports[1]["name"], "mesh");
        assert_eq!(ports[1]["port"], 15008);
        assert_eq!(ports[1]["appProtocol"], "all");
        let typed: crate::sandbox::manifest::ServiceObject = svc.typed().unwrap();
        validate_service(&typed.spec).unwrap();

        let deployment = find(&objects, "Deployment");
        let d: DeploymentObject = deployment.typed().unwrap();
        validate_deployment(&d).unwrap();
        assert_eq!(d.spec.replicas, Some(1));
        let pod_labels = &d.spec.template.metadata.labels;
        assert_eq!(pod_labels[GATEWAY_NAME_LABEL], "waypoint");
        assert_eq!(pod_labels[DATAPLANE_MODE_LABEL], "none");
        let spec = &d.spec.template.spec;
        assert_eq!(spec.service_account_name.as_deref(), Some("waypoint"));
        let c = &spec.containers[0];
        assert_eq!(c.name, CONTAINER);
        assert_eq!(
            c.command.join(" "),
            "waypoint --namespace shop --name waypoint --controller 172.18.255.1:15012 \
             --root-cert /run/meshctl/t/ca/root-cert.pem \
             --token-file /run/meshctl/t/tokens/waypoint-shop.waypoint \
             --service-account waypoint --hbone-addr 0.0.0.0:15008 \
             --metrics-addr 0.0.0.0:15020 --ready-addr 0.0.0.0:15021"
        );
        let ports: Vec<u16> = c.ports.iter().map(|p| p.container_port).collect();
        assert_eq!(ports, [15008, 15020, 15021]);
    }

    #[test]
    fn the_deployment_yields_one_waypoint_pod_and_removal_is_planned() {
        let mut c = cluster(GATEWAYS);
        let (wanted, stale) = plan(&c, &layout(), CONTROL_IP);
        assert!(stale.is_empty());
        for object in wanted {
            c.objects.push(Applied { object, created: 0 });
        }
        let mut pods = c.plan_pods().create;
        assert_eq!(pods.len(), 1);
        let pod = c.place(pods.remove(0), 1, &mut Counter(0)).unwrap();
        assert!(pod.name.starts_with("waypoint-"), "{}", pod.name);
        assert_eq!(pod.service_account, "waypoint");
        assert_eq!(pod.labels[GATEWAY_NAME_LABEL], "waypoint");
        assert_eq!(pod.labels[DATAPLANE_MODE_LABEL], "none");

        // The Gateway goes (or changes class): its objects are stale.
        c.objects.retain(|a| a.object.kind != "Gateway");
        let (wanted, stale) = plan(&c, &layout(), CONTROL_IP);
        assert!(wanted.is_empty());
        let mut kinds: Vec<&str> = stale.iter().map(|o| o.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, ["Deployment", "Service", "ServiceAccount"]);
    }

    #[test]
    fn user_objects_are_not_mistaken_for_generated_ones() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop, labels: {gateway.istio.io/managed: istio.io-mesh-controller}}\nspec: {ports: [{port: 80}]}\n";
        let c = cluster(yaml);
        assert!(!is_generated(&c.objects[0].object), "no Gateway owner");
        let (wanted, stale) = plan(&c, &layout(), CONTROL_IP);
        assert!(wanted.is_empty() && stale.is_empty());
    }
}
