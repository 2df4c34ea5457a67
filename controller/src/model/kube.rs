//! Core Kubernetes and Gateway API objects, reduced to the fields the
//! translation reads. Unknown fields are ignored so real manifests (with
//! status, managedFields, ...) load unchanged.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `metadata` of any object.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; empty means `default` for namespaced kinds.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation` (0 when absent): what status conditions observed.
    pub generation: i64,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` (RFC 3339), used to order conflicting policies.
    pub creation_timestamp: Option<String>,
    /// `metadata.ownerReferences`.
    pub owner_references: Vec<OwnerReference>,
}

/// One entry of `metadata.ownerReferences`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    /// Owner kind (`ReplicaSet`, `StatefulSet`, ...).
    pub kind: String,
    /// Owner name.
    pub name: String,
}

/// A `v1/Namespace`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Namespace {
    /// Object metadata; labels carry `istio.io/dataplane-mode` and `istio.io/use-waypoint`.
    pub metadata: ObjectMeta,
}

/// A `v1/Pod`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: PodSpec,
    /// `status`.
    pub status: PodStatus,
}

impl Pod {
    /// The service account the pod runs as: `spec.serviceAccountName`, or
    /// `default` when unset, as Kubernetes fills it in.
    pub fn service_account(&self) -> &str {
        match self.spec.service_account_name.as_str() {
            "" => "default",
            sa => sa,
        }
    }
}

/// `Pod.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// Node the pod is scheduled to.
    pub node_name: String,
    /// Service account; empty means `default`.
    pub service_account_name: String,
    /// Containers (for named ports).
    pub containers: Vec<Container>,
}

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Declared ports.
    pub ports: Vec<ContainerPort>,
}

/// A container port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    /// Port name, referenced by a Service's named `targetPort`.
    pub name: String,
    /// Port number.
    pub container_port: u16,
    /// `TCP` (default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
}

/// `Pod.status`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    pub phase: String,
    /// Primary pod IP.
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    /// All pod IPs (dual stack).
    #[serde(rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
    /// IP of the node.
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

/// One entry of `status.podIPs`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

/// A `v1/Service`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Service {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: ServiceSpec,
}

/// `Service.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer`, `ExternalName`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Primary cluster IP; `None` means headless.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    /// All cluster IPs (dual stack).
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Pod selector; `None` or empty selects no pods (endpoints managed elsewhere).
    pub selector: Option<BTreeMap<String, String>>,
}

impl ServiceSpec {
    /// The cluster IPs as written: `clusterIPs`, else `clusterIP` alone, else none. Entries
    /// may still be `None` (headless) or malformed: each reader decides what to report.
    pub fn cluster_ip_list(&self) -> &[String] {
        if !self.cluster_ips.is_empty() {
            &self.cluster_ips
        } else if self.cluster_ip.is_empty() {
            &[]
        } else {
            std::slice::from_ref(&self.cluster_ip)
        }
    }
}

/// One Service port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServicePort {
    /// Port name.
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Target on the pod: number or container port name; absent means `port`.
    pub target_port: Option<IntOrString>,
    /// `TCP` (default), `UDP`, `SCTP`.
    pub protocol: Option<String>,
    /// Application protocol hint (`http`, `grpc`, ...).
    pub app_protocol: Option<String>,
}

/// Kubernetes `IntOrString`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A name.
    String(String),
}

/// A `gateway.networking.k8s.io` Gateway.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Gateway {
    /// Object metadata; labels carry `istio.io/waypoint-for`.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: GatewaySpec,
}

/// `Gateway.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewaySpec {
    /// `istio-waypoint` marks a waypoint.
    pub gateway_class_name: String,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// `spec.infrastructure` (labels propagated to generated resources).
    pub infrastructure: Option<GatewayInfrastructure>,
}

/// A Gateway listener.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Listener {
    /// Listener name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// Protocol (`HBONE`, `HTTP`, ...).
    pub protocol: String,
}

/// `Gateway.spec.infrastructure`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GatewayInfrastructure {
    /// Labels; Istio also reads `istio.io/waypoint-for` here.
    pub labels: BTreeMap<String, String>,
    /// Annotations, propagated to generated resources.
    pub annotations: BTreeMap<String, String>,
}
