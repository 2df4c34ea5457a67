//! What the mesh makes of objects: the controller's own reading and translation of the
//! sandbox's state folder (the very files the sandbox's controller reads), so that `apply`
//! reports what the controller will act on, in part, or not at all, and `analyze` says the
//! same of files before they are applied.

use std::path::{Path, PathBuf};

use controller::model::{Problem, WARNING_PREFIX};
use controller::source::FileSource;
use controller::translate::{TranslateOptions, translate};

use crate::sandbox::model::ignored::ignored_fields;
use crate::sandbox::model::objects::Object;

/// A problem with one applied object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// False for a warning: the object is acted on, with a caveat.
    pub error: bool,
    /// `<file>: <Kind> <ns>/<name>: field <field>: <message>`, the file being the one the
    /// object was applied from.
    pub text: String,
}

/// The problems the controller finds with `applied`, read from the state folder `state_dir`
/// (its `manifests/` and `pods/`).
pub fn of_applied(state_dir: &Path, applied: &[Object]) -> Vec<Finding> {
    of_objects(state_folders(state_dir), applied)
}

/// The problems the controller would find with `objects` were they applied to the sandbox
/// whose state folder is `state_dir` (`None`: to an empty cluster), without applying them.
pub fn of_unapplied(state_dir: Option<&Path>, objects: &[Object]) -> std::io::Result<Vec<Finding>> {
    let scratch = Scratch::new()?;
    for (n, object) in objects.iter().enumerate() {
        let text = serde_json::to_vec(&object.value).map_err(std::io::Error::other)?;
        std::fs::write(scratch.0.join(format!("{n:06}.json")), text)?;
    }
    let mut folders = state_dir.map(state_folders).unwrap_or_default();
    // Last, so that the objects analyzed win over the versions the sandbox holds.
    folders.push(scratch.0.clone());
    Ok(of_objects(folders, objects))
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

/// The problems the controller finds reading `folders` that are about one of `objects`, and
/// the fields the sandbox ignores.
fn of_objects(folders: Vec<PathBuf>, objects: &[Object]) -> Vec<Finding> {
    let mut source = FileSource::new(folders);
    source.scan();
    let translation = translate(&source.index(), &TranslateOptions::default());
    translation
        .problems
        .into_iter()
        .filter_map(|problem| {
            let object = objects.iter().find(|o| is_about(&problem, o))?;
            let error = !problem.is_warning();
            // Located in the folder's copy, not in the file the user wrote.
            let text = Problem {
                origin: object.source.clone(),
                ..problem.without_location()
            }
            .to_string();
            Some(Finding { error, text })
        })
        .chain(sandbox_ignores(objects))
        .collect()
}

/// Whether `problem` is about `object`.
fn is_about(problem: &Problem, object: &Object) -> bool {
    problem.kind == object.kind
        && problem.name == object.name
        && problem.namespace == object.namespace.as_deref().unwrap_or_default()
}

/// A private folder that is removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("meshctl-analyze-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::manifest::parse_documents;

    #[test]
    fn unapplied_objects_are_analyzed_in_a_scratch_folder_that_goes_away() {
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
        let prefix = format!("meshctl-analyze-{}-", std::process::id());
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
