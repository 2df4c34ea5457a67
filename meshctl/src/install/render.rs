//! The bundled manifests as objects, with [`InstallOptions`] applied field by field (parsed,
//! changed, printed again: never text substitution), and printed as YAML documents or as a
//! JSON `List`.

use serde_yaml_ng::{Mapping, Value};

use super::bundled::{FILES, ManifestFile};
use super::options::InstallOptions;

/// The install's objects in apply order, with `options` applied.
pub fn objects(options: &InstallOptions) -> Vec<Value> {
    let mut objects = bundled_objects(FILES);
    for object in &mut objects {
        apply(object, options);
    }
    objects
}

/// Every object of `files`, in order; comments and empty documents dropped.
pub fn bundled_objects(files: &[ManifestFile]) -> Vec<Value> {
    let mut objects = Vec::new();
    for file in files {
        for document in serde_yaml_ng::Deserializer::from_str(file.text) {
            // The files are compiled in and parsed by this module's tests: a failure here is
            // a broken build, not a user's mistake.
            let value = <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("manifests/{}: {e}", file.path));
            if !value.is_null() {
                objects.push(value);
            }
        }
    }
    objects
}

/// Multi-document YAML, one document per object.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(object).expect("YAML values serialize"));
    }
    out
}

/// One `v1` `List` holding the objects, as `kubectl get -o json` prints several; `kubectl
/// apply -f -` takes it too.
pub fn to_json(objects: &[Value]) -> String {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects,
    });
    serde_json::to_string_pretty(&list).expect("YAML values serialize to JSON")
}

/// Only what `kubectl delete -f -` needs of each object: apiVersion, kind, name and namespace.
pub fn references(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .map(|object| {
            let mut metadata = Mapping::new();
            for field in ["name", "namespace"] {
                if let Some(value) = object["metadata"].get(field) {
                    metadata.insert(field.into(), value.clone());
                }
            }
            let mut reference = Mapping::new();
            reference.insert("apiVersion".into(), object["apiVersion"].clone());
            reference.insert("kind".into(), object["kind"].clone());
            reference.insert("metadata".into(), Value::Mapping(metadata));
            Value::Mapping(reference)
        })
        .collect()
}

/// `kind/name` (with `namespace/` first when namespaced), to name an object in messages.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Applies every option that reaches `object`.
fn apply(object: &mut Value, options: &InstallOptions) {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let namespace = Value::from(options.namespace.as_str());
    if let Some(metadata) = object.get_mut("metadata") {
        if metadata.get("namespace").is_some() {
            metadata["namespace"] = namespace.clone();
        }
        if kind == "Namespace" {
            metadata["name"] = namespace.clone();
        }
    }
    if kind == "RoleBinding" || kind == "ClusterRoleBinding" {
        for subject in sequence_mut(object.get_mut("subjects")) {
            if subject.get("namespace").is_some() {
                subject["namespace"] = namespace.clone();
            }
        }
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match (kind.as_str(), name) {
        ("Deployment", "controller") => {
            object["spec"]["replicas"] = Value::from(options.controller_replicas);
            for container in containers(object) {
                apply_to_controller(container, options);
            }
        }
        ("DaemonSet", "ztunnel") => {
            for container in containers(object) {
                apply_to_ztunnel(container, options);
            }
        }
        _ => {}
    }
}

fn apply_to_controller(container: &mut Value, options: &InstallOptions) {
    retag_image(container, options);
    let waypoint = image(options, "waypoint");
    set_flag(container, "--root-namespace", &options.namespace);
    set_flag(container, "--trust-domain", &options.trust_domain);
    set_flag(container, "--waypoint-image", &waypoint);
    set_flag(container, "--log-level", &options.controller_log_level);
}

fn apply_to_ztunnel(container: &mut Value, options: &InstallOptions) {
    retag_image(container, options);
    let (namespace, trust_domain) = (&options.namespace, &options.trust_domain);
    set_flag(
        container,
        "--controller",
        &format!("istiod.{namespace}.svc:15012"),
    );
    set_flag(
        container,
        "--controller-identity",
        &format!("spiffe://{trust_domain}/ns/{namespace}/sa/controller"),
    );
    set_flag(container, "--trust-domain", trust_domain);
    set_flag(container, "--log-level", &options.ztunnel_log_level);
}

/// `<registry>/<component>:<tag>`.
fn image(options: &InstallOptions, component: &str) -> String {
    format!(
        "{}/{component}:{}",
        options.image_registry, options.image_tag
    )
}

/// Keeps the image's own name (the last path segment), changes its registry and tag.
fn retag_image(container: &mut Value, options: &InstallOptions) {
    let Some(current) = container["image"].as_str() else {
        return;
    };
    let last = current.rsplit('/').next().unwrap_or(current);
    let component = last.split(':').next().unwrap_or(last).to_owned();
    container["image"] = Value::from(image(options, &component));
}

/// Replaces the value of `--flag=value` among the container's args, where the manifest has it.
fn set_flag(container: &mut Value, flag: &str, value: &str) {
    let prefix = format!("{flag}=");
    for arg in sequence_mut(container.get_mut("args")) {
        if arg.as_str().is_some_and(|a| a.starts_with(&prefix)) {
            *arg = Value::from(format!("{prefix}{value}"));
        }
    }
}

/// The containers of a workload's pod template.
fn containers(object: &mut Value) -> impl Iterator<Item = &mut Value> {
    let spec = object
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.get_mut("spec"))
        .and_then(|s| s.get_mut("containers"));
    sequence_mut(spec)
}

fn sequence_mut(value: Option<&mut Value>) -> impl Iterator<Item = &mut Value> {
    value
        .and_then(Value::as_sequence_mut)
        .into_iter()
        .flat_map(|s| s.iter_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn args<'a>(object: &'a Value, container: &str) -> Vec<&'a str> {
        let containers = object["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        let c = containers.iter().find(|c| c["name"] == container).unwrap();
        c["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    fn image<'a>(object: &'a Value, container: &str) -> &'a str {
        let containers = object["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap();
        let c = containers.iter().find(|c| c["name"] == container).unwrap();
        c["image"].as_str().unwrap()
    }

    /// With no options, the objects are the files' own, unchanged.
    #[test]
    fn defaults_print_the_files_objects() {
        assert_eq!(objects(&InstallOptions::default()), bundled_objects(FILES));
    }

    #[test]
    fn every_option_reaches_its_fields() {
        let options = InstallOptions::from_sets(&[
            "namespace=mesh-system",
            "image.registry=registry.example.com/mesh",
            "image.tag=2.0.0",
            "controller.replicas=3",
            "trustDomain=example.org",
            "controller.logLevel=debug",
            "ztunnel.logLevel=ztunnel=trace,info",
        ])
        .unwrap();
        let objects = objects(&options);
        // Namespaced objects, the Namespace itself and the bindings' subjects move.
        assert!(find(&objects, "Namespace", "mesh-system")["metadata"]["namespace"].is_null());
        for object in &objects {
            if let Some(ns) = object["metadata"].get("namespace") {
                assert_eq!(ns, "mesh-system", "{}", describe(object));
            }
        }
        for (kind, name) in [
            ("ClusterRoleBinding", "mesh-controller"),
            ("RoleBinding", "mesh-controller-ca"),
            ("RoleBinding", "mesh-controller-leader-election"),
        ] {
            assert_eq!(
                find(&objects, kind, name)["subjects"][0]["namespace"],
                "mesh-system"
            );
        }
        let controller = find(&objects, "Deployment", "controller");
        assert_eq!(controller["spec"]["replicas"], 3);
        assert_eq!(
            image(controller, "controller"),
            "registry.example.com/mesh/controller:2.0.0"
        );
        let controller_args = args(controller, "controller");
        for flag in [
            "--root-namespace=mesh-system",
            "--trust-domain=example.org",
            "--waypoint-image=registry.example.com/mesh/waypoint:2.0.0",
            "--log-level=debug",
        ] {
            assert!(
                controller_args.contains(&flag),
                "{flag}: {controller_args:?}"
            );
        }
        let ztunnel = find(&objects, "DaemonSet", "ztunnel");
        for container in ["proxy", "node-agent"] {
            assert_eq!(
                image(ztunnel, container),
                "registry.example.com/mesh/ztunnel:2.0.0"
            );
            let container_args = args(ztunnel, container);
            for flag in [
                "--controller=istiod.mesh-system.svc:15012",
                "--controller-identity=spiffe://example.org/ns/mesh-system/sa/controller",
                "--log-level=ztunnel=trace,info",
            ] {
                assert!(container_args.contains(&flag), "{flag}: {container_args:?}");
            }
        }
        assert!(args(ztunnel, "proxy").contains(&"--trust-domain=example.org"));
        // Nothing else moved: the CRDs are cluster-wide and untouched.
        let defaults = bundled_objects(FILES);
        let crds = |objects: &[Value]| -> Vec<Value> {
            objects
                .iter()
                .filter(|o| o["kind"] == "CustomResourceDefinition")
                .cloned()
                .collect()
        };
        assert_eq!(crds(&objects), crds(&defaults));
        assert_eq!(crds(&objects).len(), 14);
    }

    #[test]
    fn yaml_output_parses_back_to_the_same_objects() {
        let objects = objects(&InstallOptions::default());
        let text = to_yaml(&objects);
        let again: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
        assert_eq!(again, objects);
    }

    #[test]
    fn json_output_is_a_list_of_the_objects() {
        let objects = objects(&InstallOptions::default());
        let list: serde_json::Value = serde_json::from_str(&to_json(&objects)).unwrap();
        assert_eq!(list["kind"], "List");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), objects.len());
        assert_eq!(items[14]["kind"], "Namespace");
        assert_eq!(items[14]["metadata"]["name"], "istio-system");
    }

    #[test]
    fn references_keep_only_what_delete_needs() {
        let objects = objects(&InstallOptions::default());
        let refs = references(&objects);
        let pdb = find(&refs, "PodDisruptionBudget", "controller");
        assert_eq!(
            serde_yaml_ng::to_string(pdb).unwrap(),
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  \
             name: controller\n  namespace: istio-system\n"
        );
    }
}
