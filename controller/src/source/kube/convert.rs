//! One Kubernetes object → what the index holds for it, through the same
//! parsing path as a manifest file, so both sources yield identical objects.

use kube::api::DynamicObject;
use serde_json::Value;

use super::kinds::{StatusStyle, WatchedKind};
use super::observed::{KUBERNETES_ORIGIN, Observed};
use crate::model::{Object, ObjectKey, Problem, parse_documents};

/// What the index holds for one Kubernetes object.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Entry {
    /// The decoded object (none when it is invalid and nothing good is known).
    pub objects: Vec<Object>,
    /// Problems decoding it.
    pub problems: Vec<Problem>,
    /// What the status and Event writers need.
    pub observed: Option<Observed>,
}

/// `kubernetes:<Kind>/<namespace>/<name>` (`kubernetes:<Kind>/<name>` for
/// cluster-scoped kinds): where problems say an object came from.
pub fn origin(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{KUBERNETES_ORIGIN}{kind}/{name}")
    } else {
        format!("{KUBERNETES_ORIGIN}{kind}/{namespace}/{name}")
    }
}

/// (namespace, name) of an object as the index keys it: namespaced kinds
/// without a namespace are in `default`, as the parser has it.
pub(super) fn name_of(kind: &WatchedKind, obj: &DynamicObject) -> (String, String) {
    let namespace = match (&obj.metadata.namespace, kind.namespaced) {
        (_, false) => String::new(),
        (Some(ns), true) if !ns.is_empty() => ns.clone(),
        (_, true) => "default".to_string(),
    };
    (namespace, obj.metadata.name.clone().unwrap_or_default())
}

/// Decodes `obj`. When it does not decode and `previous` holds a good
/// version, that version stays in force (as for a file that stops parsing).
pub(super) fn convert(
    kind: &'static WatchedKind,
    obj: &DynamicObject,
    previous: Option<&Entry>,
) -> Entry {
    let (namespace, name) = name_of(kind, obj);
    let origin = origin(kind.kind, &namespace, &name);
    let observed = observe(kind, obj);
    let parsed = match manifest(kind, obj) {
        Ok(text) => {
            let mut parsed = parse_documents(&origin, &text, true);
            for p in &mut parsed.problems {
                p.message = tidy(&p.message);
            }
            for object in &mut parsed.objects {
                if let Some(p) = object.unreadable_mut() {
                    p.message = tidy(&p.message);
                }
            }
            parsed
        }
        Err(e) => crate::model::Parsed {
            objects: Vec::new(),
            problems: vec![
                Problem::new(&origin, kind.kind, &namespace, &name)
                    .message(format!("not representable as JSON: {e}")),
            ],
        },
    };
    // A policy that could not be read in full is kept, to fail closed, unless a good version
    // of it is known; its problem is then reported here rather than by translation.
    let unreadable: Vec<Problem> = parsed
        .objects
        .iter()
        .filter_map(|o| o.unreadable().cloned())
        .collect();
    if parsed.problems.is_empty() && unreadable.is_empty() {
        return Entry {
            objects: parsed.objects,
            problems: Vec::new(),
            observed,
        };
    }
    let readable = |e: &Entry| e.objects.iter().all(|o| o.unreadable().is_none());
    match previous {
        Some(prev) if !prev.objects.is_empty() && readable(prev) => {
            let mut problems = parsed.problems;
            problems.extend(unreadable.into_iter().map(|p| {
                let message = format!("{}; object skipped", p.message);
                p.message(message)
            }));
            problems.push(
                Problem::new(&origin, kind.kind, &namespace, &name)
                    .message("keeping the last good version of this object until it is fixed"),
            );
            Entry {
                objects: prev.objects.clone(),
                problems,
                observed,
            }
        }
        _ => Entry {
            objects: parsed.objects,
            problems: parsed.problems,
            observed,
        },
    }
}

/// A parse message without what only makes sense for files: the document
/// number and the line and column in the one-line JSON the object became.
fn tidy(message: &str) -> String {
    let text = Problem::default()
        .message(message)
        .without_location()
        .message;
    match text.strip_suffix("; document skipped") {
        Some(rest) => format!("{rest}; object skipped"),
        None => text,
    }
}

/// The object as a JSON manifest, without what changes on every write and
/// means nothing to translation, so that a status write or a relist does
/// not look like a change of the object.
fn manifest(kind: &WatchedKind, obj: &DynamicObject) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(obj)?;
    if let Some(map) = value.as_object_mut() {
        // List items often come without apiVersion and kind.
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.api_kind().into()));
        // A pod's status is its IP and phase; any other kind's status is
        // what controllers (this one included) write about it.
        if kind.kind != "Pod" {
            map.remove("status");
        }
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            // generation stays: it moves only with the spec, and conditions report it.
            meta.remove("resourceVersion");
        }
    }
    serde_json::to_string(&value)
}

/// The parts of `obj` the status and Event writers read.
fn observe(kind: &'static WatchedKind, obj: &DynamicObject) -> Option<Observed> {
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    if kind.status == StatusStyle::None {
        return Some(Observed {
            kind,
            generation: 0,
            resource_version: String::new(),
            uid,
            status: Value::Null,
            parent_refs: Vec::new(),
            targeted: false,
        });
    }
    let spec = obj.data.get("spec");
    let parent_refs = spec
        .and_then(|s| s.get("parentRefs"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let targeted = spec.is_some_and(|s| {
        s.get("targetRef").is_some_and(|t| !t.is_null())
            || s.get("targetRefs")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty())
    });
    Some(Observed {
        kind,
        generation: obj.metadata.generation.unwrap_or_default(),
        resource_version: obj.metadata.resource_version.clone().unwrap_or_default(),
        uid,
        status: obj.data.get("status").cloned().unwrap_or(Value::Null),
        parent_refs,
        targeted,
    })
}

/// The key of an entry's object (for the observed map).
pub(super) fn key(kind: &WatchedKind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(kind.kind, namespace, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_file_positions() {
        assert_eq!(
            tidy(
                "document 1: invalid type: string \"x\", expected a sequence (line 1, column 145); document skipped"
            ),
            "invalid type: string \"x\", expected a sequence; object skipped"
        );
        assert_eq!(tidy("metadata.name: missing"), "metadata.name: missing");
        assert_eq!(tidy("bad (see docs)"), "bad (see docs)");
    }

    #[test]
    fn origins_name_the_object() {
        assert_eq!(origin("Pod", "shop", "p"), "kubernetes:Pod/shop/p");
        assert_eq!(origin("Namespace", "", "shop"), "kubernetes:Namespace/shop");
    }
}
