//! What the mesh makes of applied objects: the controller's own reading and translation of
//! the sandbox's state folder (the very files the sandbox's controller reads), so that
//! `apply` reports what the controller will act on, in part, or not at all.

use std::path::Path;

use controller::model::Problem;
use controller::source::FileSource;
use controller::translate::{TranslateOptions, translate};

use crate::sandbox::model::objects::Object;

/// A problem with one applied object.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    let mut source = FileSource::new(vec![state_dir.join("manifests"), state_dir.join("pods")]);
    source.scan();
    let translation = translate(&source.index(), &TranslateOptions::default());
    translation
        .problems
        .into_iter()
        .filter_map(|problem| {
            let object = applied.iter().find(|o| is_about(&problem, o))?;
            let error = !problem.is_warning();
            // Located in the state folder's copy, not in the file the user wrote.
            let text = Problem {
                origin: object.source.clone(),
                ..problem.without_location()
            }
            .to_string();
            Some(Finding { error, text })
        })
        .collect()
}

/// Whether `problem` is about `object`.
fn is_about(problem: &Problem, object: &Object) -> bool {
    problem.kind == object.kind
        && problem.name == object.name
        && problem.namespace == object.namespace.as_deref().unwrap_or_default()
}
