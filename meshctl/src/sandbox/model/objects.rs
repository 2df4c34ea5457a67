//! Kubernetes objects as the sandbox keeps them, and typed views of the
//! kinds it acts on (Namespace, ServiceAccount, Pod, Deployment, Service).
//!
//! Every document is kept whole as JSON (`Object::value`), so fields the
//! sandbox does not understand, and kinds it does not act on (policies,
//! routes...), reach the controller unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One applied Kubernetes object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Object {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace` after defaulting; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
    /// Where it was read from (for messages).
    pub source: String,
    /// The whole document, unknown fields included.
    pub value: serde_json::Value,
}

impl Object {
    /// `kind/name` or `kind ns/name`, for messages.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// True when this object and `other` denote the same API object.
    pub fn same_identity(&self, other: &Object) -> bool {
        self.kind == other.kind && self.namespace == other.namespace && self.name == other.name
    }

    /// kubectl's lowercase resource prefix: `deployment.apps/orders`.
    pub fn resource_name(&self) -> String {
        let group = self.api_version.split_once('/').map(|(g, _)| g);
        match group {
            Some(g) => format!("{}.{g}/{}", self.kind.to_lowercase(), self.name),
            None => format!("{}/{}", self.kind.to_lowercase(), self.name),
        }
    }

    /// The object's labels (`metadata.labels`).
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.value
            .pointer("/metadata/labels")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// Typed view; the object was validated when it was loaded, so a failure
    /// here means the state file was edited by hand.
    pub fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone())
            .map_err(|e| format!("{} from {}: {e}", self.display(), self.source))
    }
}

/// `metadata` fields the sandbox reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A `Pod`.
#[derive(Debug, Clone, Deserialize)]
pub struct PodObject {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: PodSpec,
}

/// `Pod.spec` (and a Deployment's `spec.template.spec`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The processes to run.
    pub containers: Vec<Container>,
    /// Identity; "default" when unset.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Pins the pod to a node.
    #[serde(default)]
    pub node_name: Option<String>,
    /// What every container runs as unless its own `securityContext` says
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
}

/// `spec.securityContext`: the pod-wide part of what containers run as.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    /// User id of every container (a container's own setting wins).
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// Primary group id of every container.
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// Refuse to run a container as uid 0.
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// Extra groups of every container's process.
    #[serde(default)]
    pub supplemental_groups: Vec<i64>,
    /// A further supplementary group (volumes' owner in Kubernetes).
    #[serde(default)]
    pub fs_group: Option<i64>,
}

/// `containers[].securityContext`: what one container runs as and with
/// which privileges.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// User id (wins over the pod's).
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// Primary group id (wins over the pod's).
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// Refuse to run as uid 0 (wins over the pod's).
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    /// Capabilities added to or dropped from the runtime's default set.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// Every capability and device of the machine: refused by the sandbox.
    #[serde(default)]
    pub privileged: Option<bool>,
    /// `false` sets no_new_privs; the sandbox sets it unless this is `true`.
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    /// Accepted; the sandbox's root filesystem is always read-only.
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
}

/// `securityContext.capabilities`: names as in Kubernetes (`NET_ADMIN`,
/// `CAP_NET_ADMIN` also accepted), `ALL` in `drop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Capabilities {
    /// Granted on top of the default set.
    #[serde(default)]
    pub add: Vec<String>,
    /// Removed from the default set (and from `add`).
    #[serde(default)]
    pub drop: Vec<String>,
}

/// One container: a process started in the pod's network namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Ignored by the sandbox (there are no images), kept for the controller.
    #[serde(default)]
    pub image: Option<String>,
    /// Program and leading arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Further arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Declared ports: used for named targetPorts and readiness.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// User, groups and privileges (wins over the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// An environment variable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value (`$(VAR)` references are expanded).
    #[serde(default)]
    pub value: Option<String>,
    /// Downward-API source.
    #[serde(default)]
    pub value_from: Option<EnvVarSource>,
}

/// `env[].valueFrom`: only `fieldRef` is supported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// `fieldRef.fieldPath`.
    #[serde(default)]
    pub field_ref: Option<FieldRef>,
}

/// `valueFrom.fieldRef`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldRef {
    /// e.g. `metadata.name`, `status.podIP`, `metadata.labels['version']`.
    pub field_path: String,
}

/// A declared container port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Name a Service's targetPort may refer to.
    #[serde(default)]
    pub name: Option<String>,
    /// Port number.
    pub container_port: u16,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// An `apps/v1` `Deployment`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentObject {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: DeploymentSpec,
}

/// `Deployment.spec`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeploymentSpec {
    /// Number of pods; 1 when unset.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to run.
    pub template: PodTemplate,
}

/// `selector` with `matchLabels` (the only form the sandbox supports).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels every selected pod carries.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `spec.template`.
#[derive(Debug, Clone, Deserialize)]
pub struct PodTemplate {
    /// Template metadata (labels, annotations).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Pod spec.
    pub spec: PodSpec,
}

/// A `Service`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceObject {
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ServiceSpec,
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Pods backing the service (same namespace).
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Requested ClusterIP, "None" for a headless service.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// ClusterIP / NodePort / LoadBalancer: all behave as ClusterIP here.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// One Service port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name.
    #[serde(default)]
    pub name: Option<String>,
    /// The port on the ClusterIP.
    pub port: u16,
    /// Pod port: a number or a container port name; `port` when unset.
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    /// TCP (default) or UDP.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// Kubernetes' int-or-string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrString {
    /// A port number.
    Int(u16),
    /// A port name.
    Str(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(n) => write!(f, "{n}"),
            IntOrString::Str(s) => f.write_str(s),
        }
    }
}
