//! Kubernetes objects as the sandbox reads them: loading multi-document YAML
//! from files, folders or stdin, typed views of the kinds the sandbox acts on
//! (Namespace, ServiceAccount, Pod, Deployment, Service), and validation with
//! errors that name the file, the object and the field.
//!
//! Every document is kept whole as JSON (`Object::value`), so fields the
//! sandbox does not understand, and kinds it does not act on (policies,
//! routes...), reach the controller unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::validate::{parse_map_field, protocol, supported_field_path};
use super::validate::{validate_deployment, validate_name, validate_pod_spec, validate_service};

/// Kinds that live outside any namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "GatewayClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
];

/// A manifest that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file or folder could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The path that failed.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// A document is not valid YAML or not a valid object.
    #[error("{file}: {what}: {message}")]
    Invalid {
        /// The file the document came from.
        file: String,
        /// Which document: "document 2 (Deployment shop/orders)".
        what: String,
        /// What is wrong, starting with the field path when known.
        message: String,
    },
}

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

/// The header every document has.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
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

/// Reads `path`: a file, a folder (its `*.yaml`, `*.yml` and `*.json` files in
/// name order, not recursive) or `-` for stdin.
pub fn load_path(path: &Path) -> Result<Vec<Object>, ManifestError> {
    let read_err = |file: &Path, source| ManifestError::Read {
        file: file.display().to_string(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| read_err(path, e))?;
        return parse_documents(&text, "<stdin>");
    }
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
    let files: Vec<PathBuf> = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| read_err(path, e))? {
            let p = entry.map_err(|e| read_err(path, e))?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if p.is_file() && matches!(ext, "yaml" | "yml" | "json") {
                files.push(p);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| read_err(&file, e))?;
        objects.extend(parse_documents(&text, &file.display().to_string())?);
    }
    Ok(objects)
}

/// Parses multi-document YAML (JSON is YAML too) into validated objects.
pub fn parse_documents(text: &str, file: &str) -> Result<Vec<Object>, ManifestError> {
    let invalid = |what: String, message: String| ManifestError::Invalid {
        file: file.to_string(),
        what,
        message,
    };
    // Two passes: untyped values keep every field; typed deserialisation runs
    // straight on the YAML so its errors carry the field path and line.
    let mut values = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .map_err(|e| invalid(format!("document {}", i + 1), format!("invalid YAML: {e}")))?;
        values.push(value);
    }
    let mut objects = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let Some(value) = values.get(i) else { break };
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let what = format!("document {}", i + 1);
        let header = TypeMeta::deserialize(value.clone())
            .map_err(|e| invalid(what.clone(), e.to_string()))?;
        let kind = header
            .kind
            .filter(|k| !k.is_empty())
            .ok_or_else(|| invalid(what.clone(), "kind: required field is missing".into()))?;
        let api_version = header
            .api_version
            .filter(|v| !v.is_empty())
            .ok_or_else(|| invalid(what.clone(), "apiVersion: required field is missing".into()))?;
        let name = header.metadata.name.clone().unwrap_or_default();
        let what = format!("{what} ({kind} {name})");
        if name.is_empty() {
            return Err(invalid(
                what,
                "metadata.name: required field is missing".into(),
            ));
        }
        let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            None
        } else {
            Some(
                header
                    .metadata
                    .namespace
                    .clone()
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| "default".to_string()),
            )
        };
        let what = match &namespace {
            Some(ns) => format!("document {} ({kind} {ns}/{name})", i + 1),
            None => what,
        };
        validate_name(&name, kind == "Namespace" || kind == "Service")
            .map_err(|m| invalid(what.clone(), format!("metadata.name: {m}")))?;
        if let Some(ns) = &namespace {
            validate_name(ns, true)
                .map_err(|m| invalid(what.clone(), format!("metadata.namespace: {m}")))?;
        }
        let typed_err = |e: serde_yaml_ng::Error| invalid(what.clone(), e.to_string());
        match kind.as_str() {
            "Pod" => {
                let pod = PodObject::deserialize(doc).map_err(typed_err)?;
                validate_pod_spec(&pod.spec, "spec").map_err(|m| invalid(what.clone(), m))?;
            }
            "Deployment" => {
                let d = DeploymentObject::deserialize(doc).map_err(typed_err)?;
                validate_deployment(&d).map_err(|m| invalid(what.clone(), m))?;
            }
            "Service" => {
                let s = ServiceObject::deserialize(doc).map_err(typed_err)?;
                validate_service(&s.spec).map_err(|m| invalid(what.clone(), m))?;
            }
            _ => {}
        }
        let mut json = serde_json::to_value(value)
            .map_err(|e| invalid(what.clone(), format!("cannot be represented as JSON: {e}")))?;
        if let (Some(ns), Some(meta)) = (&namespace, json.get_mut("metadata")) {
            // Explicit namespaces so the controller never has to guess.
            if let Some(m) = meta.as_object_mut() {
                m.insert("namespace".into(), serde_json::Value::String(ns.clone()));
            }
        }
        objects.push(Object {
            api_version,
            kind,
            namespace,
            name,
            source: file.to_string(),
            value: json,
        });
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: orders}}
  template:
    metadata: {labels: {app: orders, version: v1}}
    spec:
      containers:
      - name: app
        command: [meshctl, app, http-echo]
        ports: [{name: http, containerPort: 8080}]
        futureField: kept
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny}
spec: {action: DENY}
---
"#;

    #[test]
    fn parses_known_and_unknown_kinds_keeping_fields() {
        let objs = parse_documents(GOOD, "demo.yaml").unwrap();
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0].namespace, None);
        assert_eq!(objs[1].namespace.as_deref(), Some("shop"));
        assert_eq!(objs[1].resource_name(), "deployment.apps/orders");
        let kept = objs[1]
            .value
            .pointer("/spec/template/spec/containers/0/futureField")
            .unwrap();
        assert_eq!(kept, "kept");
        // Unknown kinds default to the "default" namespace, explicitly.
        assert_eq!(objs[2].namespace.as_deref(), Some("default"));
        assert_eq!(
            objs[2].value.pointer("/metadata/namespace").unwrap(),
            "default"
        );
        let d: DeploymentObject = objs[1].typed().unwrap();
        assert_eq!(d.spec.replicas, Some(2));
    }

    fn err(text: &str) -> String {
        parse_documents(text, "bad.yaml").unwrap_err().to_string()
    }

    #[test]
    fn type_errors_name_file_object_and_field() {
        let e = err(r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders}
spec:
  replicas: two
  selector: {matchLabels: {app: orders}}
  template: {metadata: {labels: {app: orders}}, spec: {containers: [{name: a}]}}
"#);
        assert!(
            e.starts_with("bad.yaml: document 1 (Deployment default/orders)"),
            "{e}"
        );
        assert!(e.contains("spec.replicas"), "{e}");
    }

    #[test]
    fn missing_fields_and_bad_values_are_named() {
        let e = err("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n");
        assert!(e.contains("bad.yaml") && e.contains("containers"), "{e}");
        let e = err(
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 1.2.3.4, ports: [{port: 80}]}\n",
        );
        assert!(e.contains("spec.clusterIP"), "{e}");
        let e = err("kind: Pod\nmetadata: {name: p}\n");
        assert!(e.contains("apiVersion"), "{e}");
        let e = err(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a}]}\n",
        );
        assert!(e.contains("metadata.name"), "{e}");
        let e = err(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: a
    env: [{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}]
"#);
        assert!(e.contains("spec.containers[0].env[0].valueFrom"), "{e}");
        let e = err(r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: x}}
  template: {metadata: {labels: {app: y}}, spec: {containers: [{name: a}]}}
"#);
        assert!(e.contains("spec.selector"), "{e}");
    }

    #[test]
    fn replicas_beyond_any_sandbox_are_refused() {
        let deployment = |replicas: u32| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec:\n  \
                 replicas: {replicas}\n  selector: {{matchLabels: {{app: x}}}}\n  \
                 template: {{metadata: {{labels: {{app: x}}}}, spec: {{containers: [{{name: a}}]}}}}\n"
            )
        };
        assert!(parse_documents(&deployment(12_650), "ok.yaml").is_ok());
        // Planned as four billion pods, this took the process down.
        let e = err(&deployment(4_000_000_000));
        assert!(e.contains("spec.replicas") && e.contains("12650"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = err("apiVersion: v1\nkind: [unclosed\n");
        assert!(e.starts_with("bad.yaml: document 1: invalid YAML"), "{e}");
    }

    #[test]
    fn field_paths() {
        assert_eq!(
            parse_map_field("metadata.labels['version']", "metadata.labels"),
            Some("version")
        );
        assert!(supported_field_path("status.podIP"));
        assert!(!supported_field_path("status.phase"));
    }
}
