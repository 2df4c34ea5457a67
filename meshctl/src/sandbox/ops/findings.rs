//! What the mesh makes of the sandbox's objects: the controller's own reading and translation
//! (`operator::findings`) of the sandbox's state folder (the very files the sandbox's
//! controller reads), so that `apply` reports what the controller will act on, in part, or
//! not at all, and `analyze` says the same of files before they are applied; and the fields
//! the sandbox itself ignores.

use std::path::{Path, PathBuf};

use controller::model::WARNING_PREFIX;

use crate::operator::findings::{Finding, in_folders, in_layers};
use crate::sandbox::model::ignored::ignored_fields;
use crate::sandbox::model::manifest::parse_documents;
use crate::sandbox::model::objects::Object;

/// The problems the controller finds with `applied`, read from the state folder `state_dir`
/// (its `manifests/` and `pods/`), and the fields the sandbox ignores.
pub fn of_applied(state_dir: &Path, applied: &[Object]) -> Vec<Finding> {
    let mut found = in_folders(state_folders(state_dir), applied);
    found.extend(sandbox_ignores(applied));
    found
}

/// The problems the controller would find with `objects` were they applied to the sandbox
/// whose state folder is `state_dir` (`None`: to an empty cluster), without applying them.
pub fn of_unapplied(state_dir: Option<&Path>, objects: &[Object]) -> std::io::Result<Vec<Finding>> {
    let mut held = Vec::new();
    for folder in state_dir.map(state_folders).unwrap_or_default() {
        read_objects(&folder, &mut held)?;
    }
    // The objects analyzed replace the versions the sandbox holds (read twice, an object
    // would be reported as defined twice).
    let mut found = in_layers(Vec::new(), &[&held, objects], objects)?;
    found.extend(sandbox_ignores(objects));
    Ok(found)
}

/// Appends the objects of every manifest under `folder` (recursively; none if it is absent).
fn read_objects(folder: &Path, into: &mut Vec<Object>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        if path.is_dir() {
            read_objects(&path, into)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            let text = std::fs::read_to_string(&path)?;
            // The sandbox wrote these; one it cannot read is left to `check` to report.
            if let Ok(objects) = parse_documents(&text, &path.display().to_string()) {
                into.extend(objects);
            }
        }
    }
    Ok(())
}

/// The folders of a state folder that hold what the controller reads.
fn state_folders(state_dir: &Path) -> Vec<PathBuf> {
    vec![state_dir.join("manifests"), state_dir.join("pods")]
}

/// The fields of `objects` the sandbox itself does not act on, as warnings; objects with an
/// owner (a waypoint's Deployment) are the mesh's own doing, not the user's, and left out.
fn sandbox_ignores(objects: &[Object]) -> Vec<Finding> {
    objects
        .iter()
        .filter(|object| object.value["metadata"]["ownerReferences"].is_null())
        .flat_map(|object| {
            ignored_fields(object)
                .into_iter()
                .map(move |(field, why)| Finding {
                    error: false,
                    text: format!(
                        "{}: {}: field {field}: {WARNING_PREFIX}not applied in the sandbox: {why}",
                        object.source,
                        object.display()
                    ),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unapplied_objects_are_analyzed_on_their_own() {
        let objects = parse_documents(
            "apiVersion: security.linkerd.io/v1beta1\nkind: Server\n\
             metadata: {name: web, namespace: shop}\n---\n\
             apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
             metadata: {name: t, namespace: istio-system}\n\
             spec: {tracing: [{providers: [{name: jaeger}]}]}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
            "server.yaml",
        )
        .unwrap();
        let found = of_unapplied(None, &objects).unwrap();
        let error = found.iter().find(|f| f.error).expect("an error");
        assert!(
            error.text.starts_with(
                "server.yaml: Server shop/web: there is no API group security.linkerd.io"
            ),
            "{error:?}"
        );
        // Telemetry is read: a provider the mesh config does not declare is a finding.
        let warning = found.iter().find(|f| !f.error).expect("a warning");
        assert!(
            warning.text.starts_with(
                "server.yaml: Telemetry istio-system/t: field spec.tracing[0].providers[0].name: \
                 warning: \"jaeger\" names no extension provider of the mesh config"
            ),
            "{warning:?}"
        );
        // The misspelt Server is enforced meanwhile (fail closed), so its own problems show
        // too: it has no podSelector.
        assert!(
            found
                .iter()
                .any(|f| f.error && f.text.contains("field spec.podSelector")),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn the_mesh_config_map_is_read_like_any_object() {
        let objects = parse_documents(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n\
             data:\n  mesh: |\n    extensionProviders:\n    - name: zipkin\n      \
             zipkin: {service: zipkin.obs.svc.cluster.local, port: 9411}\n---\n\
             apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
             metadata: {name: mesh-default, namespace: istio-system}\n\
             spec: {tracing: [{providers: [{name: zipkin}]}]}\n",
            "tracing.yaml",
        )
        .unwrap();
        let found = of_unapplied(None, &objects).unwrap();
        let texts: Vec<&str> = found.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(found.len(), 2, "{texts:?}");
        assert!(found.iter().all(|f| !f.error), "{texts:?}");
        assert!(
            texts[0].starts_with(
                "tracing.yaml: ConfigMap istio-system/istio: field \
                 data.mesh.extensionProviders[0]: warning: provider kind zipkin is not supported"
            ),
            "{texts:?}"
        );
        assert!(
            texts[1].starts_with(
                "tracing.yaml: Telemetry istio-system/mesh-default: field \
                 spec.tracing[0].providers[0].name: warning: provider kind zipkin"
            ),
            "{texts:?}"
        );
    }

    #[test]
    fn an_object_the_sandbox_already_holds_is_analyzed_once_in_its_new_version() {
        const SERVICE: &str = "apiVersion: v1\nkind: Service\n\
                               metadata: {name: web, namespace: shop}\n\
                               spec: {ports: [{name: http, port: 80}]}\n";
        let state = test_support::TempDir::new("meshctl-findings");
        state.write("manifests/shop/service-web.yaml", SERVICE);
        let route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                     metadata: {name: r, namespace: shop}\n\
                     spec: {hosts: [web], http: [{route: [{destination: {host: web}}]}]}\n";
        state.write("manifests/shop/virtualservice-r.yaml", route);
        let edited = route.replace(
            "http: [",
            "http: [{route: [{destination: {host: web}}], timeout: soon}, ",
        );
        let objects = parse_documents(&format!("{SERVICE}---\n{edited}"), "vs.yaml").unwrap();
        let found = of_unapplied(Some(state.path()), &objects).unwrap();
        assert!(
            found.iter().all(|f| !f.text.contains("also defined in")),
            "{found:?}"
        );
        let errors: Vec<&str> = found
            .iter()
            .filter(|f| f.error)
            .map(|f| f.text.as_str())
            .collect();
        assert_eq!(errors.len(), 1, "the edit's own error only: {found:?}");
        assert!(errors[0].contains("spec.http[0].timeout"), "{errors:?}");
    }
}
