//! What the mesh makes of the sandbox's objects: the controller's own reading and translation
//! (`operator::findings`) of the sandbox's state folder (the very files the sandbox's
//! controller reads), so that `apply` reports what the controller will act on, in part, or
//! not at all, and `analyze` says the same of files before they are applied; and the fields
//! the sandbox itself ignores.

use std::path::{Path, PathBuf};

use controller::model::WARNING_PREFIX;

use crate::operator::findings::{Finding, in_folders, in_layers};
use crate::sandbox::model::ignored::ignored_fields;
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
    let below = state_dir.map(state_folders).unwrap_or_default();
    // The objects analyzed win over the versions the sandbox holds.
    let mut found = in_layers(below, &[objects], objects)?;
    found.extend(sandbox_ignores(objects));
    Ok(found)
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
    use crate::sandbox::model::manifest::parse_documents;

    #[test]
    fn unapplied_objects_are_analyzed_on_their_own() {
        let objects = parse_documents(
            "apiVersion: security.linkerd.io/v1beta1\nkind: Server\n\
             metadata: {name: web, namespace: shop}\n---\n\
             apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
             metadata: {name: t, namespace: shop}\n---\n\
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
        let warning = found.iter().find(|f| !f.error).expect("a warning");
        assert!(
            warning
                .text
                .starts_with("server.yaml: Telemetry shop/t: warning: "),
            "{warning:?}"
        );
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
