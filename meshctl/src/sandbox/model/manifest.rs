//! Loading manifests: multi-document YAML from files, folders or stdin,
//! turned into [`Object`]s and validated, with errors that name the file,
//! the object and the field.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::objects::{DeploymentObject, Object, ObjectMeta, PodObject, ServiceObject};
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
        let id = identity(value, i + 1).map_err(|(what, m)| invalid(what, m))?;
        validate_kind(doc, &id.kind).map_err(|m| invalid(id.what.clone(), m))?;
        let mut json = serde_json::to_value(value).map_err(|e| {
            invalid(
                id.what.clone(),
                format!("cannot be represented as JSON: {e}"),
            )
        })?;
        if let (Some(ns), Some(meta)) = (&id.namespace, json.get_mut("metadata")) {
            // Explicit namespaces so the controller never has to guess.
            if let Some(m) = meta.as_object_mut() {
                m.insert("namespace".into(), serde_json::Value::String(ns.clone()));
            }
        }
        objects.push(Object {
            api_version: id.api_version,
            kind: id.kind,
            namespace: id.namespace,
            name: id.name,
            source: file.to_string(),
            value: json,
        });
    }
    Ok(objects)
}

/// Who a document is: its kind, apiVersion, name and (defaulted) namespace,
/// and how messages name it.
struct Identity {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    /// "document 2 (Deployment shop/orders)".
    what: String,
}

/// Reads the header of document `n` (1-based): kind, apiVersion and name
/// are required, names must be valid, namespaced kinds default to
/// `default`. Errors are (which document, message).
fn identity(value: &serde_yaml_ng::Value, n: usize) -> Result<Identity, (String, String)> {
    let what = format!("document {n}");
    let header = TypeMeta::deserialize(value.clone()).map_err(|e| (what.clone(), e.to_string()))?;
    let kind = header
        .kind
        .filter(|k| !k.is_empty())
        .ok_or_else(|| (what.clone(), "kind: required field is missing".into()))?;
    let api_version = header
        .api_version
        .filter(|v| !v.is_empty())
        .ok_or_else(|| (what.clone(), "apiVersion: required field is missing".into()))?;
    let name = header.metadata.name.clone().unwrap_or_default();
    let what = format!("{what} ({kind} {name})");
    if name.is_empty() {
        return Err((what, "metadata.name: required field is missing".into()));
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
        Some(ns) => format!("document {n} ({kind} {ns}/{name})"),
        None => what,
    };
    validate_name(&name, kind == "Namespace" || kind == "Service")
        .map_err(|m| (what.clone(), format!("metadata.name: {m}")))?;
    if let Some(ns) = &namespace {
        validate_name(ns, true).map_err(|m| (what.clone(), format!("metadata.namespace: {m}")))?;
    }
    Ok(Identity {
        api_version,
        kind,
        name,
        namespace,
        what,
    })
}

/// Reads the kinds the sandbox acts on into their types, straight from the
/// document (so errors name the field and line), and validates them.
fn validate_kind(doc: serde_yaml_ng::Deserializer<'_>, kind: &str) -> Result<(), String> {
    let typed_err = |e: serde_yaml_ng::Error| e.to_string();
    match kind {
        "Pod" => {
            let pod = PodObject::deserialize(doc).map_err(typed_err)?;
            validate_pod_spec(&pod.spec, "spec")
        }
        "Deployment" => {
            let d = DeploymentObject::deserialize(doc).map_err(typed_err)?;
            validate_deployment(&d)
        }
        "Service" => {
            let s = ServiceObject::deserialize(doc).map_err(typed_err)?;
            validate_service(&s.spec)
        }
        _ => Ok(()),
    }
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
}
