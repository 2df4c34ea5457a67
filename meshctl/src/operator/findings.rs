//! What the mesh makes of objects, whichever cluster holds them: the controller's own file
//! reading and translation over folders of objects, the problems about the objects asked
//! about named with the place each came from (a user's file, `kubernetes:<Kind>/<ns>/<name>`),
//! and how `analyze` prints them.

use std::path::PathBuf;

use controller::model::Problem;
use controller::source::FileSource;
use controller::translate::{TranslateOptions, translate};

use crate::sandbox::model::objects::Object;

/// A problem with one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// False for a warning: the object is acted on, with a caveat.
    pub error: bool,
    /// `<source>: <Kind> <ns>/<name>: field <field>: <message>`, the source being where the
    /// object came from.
    pub text: String,
}

/// The problems the controller finds reading `folders` that are about one of `about`.
pub fn in_folders(folders: Vec<PathBuf>, about: &[Object]) -> Vec<Finding> {
    let mut source = FileSource::new(folders);
    source.scan();
    let translation = translate(&source.index(), &TranslateOptions::default());
    translation
        .problems
        .into_iter()
        .filter_map(|problem| {
            let object = about.iter().find(|o| is_about(&problem, o))?;
            let error = !problem.is_warning();
            // Located in the folder's copy, not where the object came from.
            let text = Problem {
                origin: object.source.clone(),
                ..problem.without_location()
            }
            .to_string();
            Some(Finding { error, text })
        })
        .collect()
}

/// The problems the controller finds with `layers` of objects read together, a later layer's
/// object winning over an earlier one's of the same kind and name, that are about one of
/// `about`; `below` are folders read before all of them. The objects are written to a scratch
/// folder that is removed before this returns.
pub fn in_layers(
    below: Vec<PathBuf>,
    layers: &[&[Object]],
    about: &[Object],
) -> std::io::Result<Vec<Finding>> {
    let mut folders = below;
    let mut scratches = Vec::new();
    for (layer, objects) in layers.iter().enumerate() {
        let scratch = Scratch::new(layer)?;
        // An object a later layer replaces is left out: read twice, it would be reported as
        // defined twice.
        let replaced = |object: &Object| {
            layers[layer + 1..]
                .iter()
                .any(|later| later.iter().any(|o| o.same_identity(object)))
        };
        for (n, object) in objects.iter().enumerate().filter(|(_, o)| !replaced(o)) {
            let text = serde_json::to_vec(&object.value).map_err(std::io::Error::other)?;
            std::fs::write(scratch.0.join(format!("{n:06}.json")), text)?;
        }
        folders.push(scratch.0.clone());
        scratches.push(scratch);
    }
    Ok(in_folders(folders, about))
}

/// Whether `problem` is about `object`.
fn is_about(problem: &Problem, object: &Object) -> bool {
    // A kind the controller keys qualified by its group (Linkerd's AuthorizationPolicy).
    let qualified = || {
        object
            .api_version
            .rsplit_once('/')
            .is_some_and(|(group, _)| problem.kind == format!("{}.{group}", object.kind))
    };
    (problem.kind == object.kind || qualified())
        && problem.name == object.name
        && problem.namespace == object.namespace.as_deref().unwrap_or_default()
}

/// Prints findings as kubectl prints admission errors (on stderr, errors marked); returns 1
/// when any is an error.
pub fn report(findings: &[Finding]) -> i32 {
    for finding in findings {
        if finding.error {
            eprintln!("error: {}", finding.text);
        } else {
            eprintln!("{}", finding.text);
        }
    }
    i32::from(findings.iter().any(|f| f.error))
}

/// `analyze`'s output: the findings as JSON, or as text with a line when there are none;
/// returns 1 when any is an error.
pub fn print_analysis(found: &[Finding], analyzed: usize, json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(found).unwrap_or_default()
        );
        return i32::from(found.iter().any(|f| f.error));
    }
    if found.is_empty() {
        println!("no problems found in {analyzed} objects");
    }
    report(found)
}

/// A private folder that is removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(layer: usize) -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!("meshctl-analyze-{}-{nanos}-{layer}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }

    #[cfg(test)]
    fn path(&self) -> &std::path::Path {
        &self.0
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

    fn objects(text: &str, source: &str) -> Vec<Object> {
        parse_documents(text, source).unwrap()
    }

    #[test]
    fn problems_of_linkerds_authorization_policy_are_about_it_and_not_istios() {
        let both = objects(
            "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {name: p, namespace: shop}\n\
             spec: {targetRef: {group: policy.linkerd.io, kind: Pod, name: x}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: p, namespace: shop}\n",
            "p.yaml",
        );
        let problem = Problem::new("x", "AuthorizationPolicy.policy.linkerd.io", "shop", "p");
        assert!(is_about(&problem, &both[0]));
        assert!(!is_about(&problem, &both[1]));
        let findings = in_layers(Vec::new(), &[&both], &both).unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].text.contains("spec.targetRef.kind"),
            "{findings:?}"
        );
    }

    #[test]
    fn a_later_layer_wins_and_only_the_objects_asked_about_are_reported() {
        let cluster = objects(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: p, namespace: shop}\nspec: {action: NOPE}\n---\n\
             apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
             metadata: {name: t, namespace: shop}\n\
             spec: {metrics: [{overrides: [{disabled: true}]}]}\n",
            "kubernetes",
        );
        let fixed = objects(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: p, namespace: shop}\nspec: {action: DENY}\n",
            "fix.yaml",
        );
        let all = in_layers(Vec::new(), &[&cluster, &fixed], &cluster).unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        // Telemetry is read; in a namespace without a waypoint it has no effect, and says so.
        assert_eq!(
            all[0].text,
            "kubernetes: Telemetry shop/t: warning: no Service of namespace shop is served by a \
             waypoint: its tracing and metrics have no effect (ztunnel reads only accessLogging, \
             mesh-wide, namespace-wide or by selector)",
            "{all:?}"
        );
        let broken = in_layers(Vec::new(), &[&fixed, &cluster], &cluster[..1]).unwrap();
        assert_eq!(broken.len(), 1, "{broken:?}");
        assert!(broken[0].error);
        assert!(
            broken[0]
                .text
                .starts_with("kubernetes: AuthorizationPolicy shop/p: field spec.action"),
            "{broken:?}"
        );
    }

    #[test]
    fn scratch_folders_go_when_dropped() {
        let scratch = Scratch::new(7).unwrap();
        let path = scratch.path().to_path_buf();
        assert!(path.is_dir());
        drop(scratch);
        assert!(!path.exists());
    }
}
