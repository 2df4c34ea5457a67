//! Status conditions on Kubernetes objects: the problems translation finds in
//! an object are written back to that object, where `kubectl get -o yaml`
//! shows them, and withdrawn once the object is fixed.
//!
//! [`desired_statuses`] is a pure function from (problems, observed objects)
//! to the status updates still to be made; [`run`] is the thin writer that
//! sends them as JSON merge patches to the status subresource.
//!
//! What is written follows what Istio writes:
//! - Gateway API routes (`HTTPRoute`, `GRPCRoute`, `TCPRoute`): one `status.parents[]`
//!   entry per mesh parent (a `Service` parentRef, GAMMA), controller
//!   `istio.io/mesh-controller`, with an `Accepted` condition: `True`/`Accepted`,
//!   or `False`/`UnsupportedValue` (the route reason the specification gives for
//!   invalid values; `NoMatchingParent` when a parent does not exist; `Conflicted`
//!   when a route of a higher-precedence type binds the same Service port, as the
//!   Gateway API's mesh binding, GEP-1294, says) with the problems as message; and a
//!   `ResolvedRefs` condition: `True`, or `False` with
//!   `BackendNotFound`, `InvalidKind` or `RefNotPermitted` for backends that do not
//!   resolve. Entries of other controllers are kept untouched.
//! - `AuthorizationPolicy`: `status.conditions[]` of type `ZtunnelAccepted`
//!   (or `WaypointAccepted` for policies with `targetRef(s)`), always present as
//!   in Istio ambient: `True`/`Accepted` ("attached to ztunnel"), `True`/
//!   `UnsupportedValue` when parts are dropped with a warning, `False`/`Invalid`
//!   when the policy is refused.
//! - `PeerAuthentication` (`ZtunnelAccepted`) and `VirtualService`,
//!   `DestinationRule`, `EnvoyFilter` (`WaypointAccepted`): Istio writes no
//!   condition for them, so ours appears only while there is a problem.
//!
//! Writes happen only when the desired status differs from the observed one,
//! and a status already sent is not sent again while it stays desired, so a
//! server that rewrites what it is given cannot start a write loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::leader::Leadership;
use crate::model::{ObjectKey, Problem, ROUTE_TYPE_CONFLICT, WARNING_PREFIX};
use crate::source::kube::kinds::{StatusStyle, WatchedKind};
use crate::source::kube::observed::{KUBERNETES_ORIGIN, Observed, ObservedMap};

/// `controllerName` of the mesh (GAMMA) controller, as Istio names it.
pub const CONTROLLER_NAME: &str = "istio.io/mesh-controller";
/// Condition type of policies enforced by ztunnel.
pub const ZTUNNEL_ACCEPTED: &str = "ZtunnelAccepted";
/// Condition type of configuration enforced by waypoints.
pub const WAYPOINT_ACCEPTED: &str = "WaypointAccepted";
/// Longest message written (Gateway API allows 32768; keep statuses readable).
const MAX_MESSAGE: usize = 4096;

/// One status write: the fields of `status` to merge into the object.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    /// The object.
    pub key: ObjectKey,
    /// The object's kind and API.
    pub kind: &'static WatchedKind,
    /// `metadata.resourceVersion` the update was computed from.
    pub resource_version: String,
    /// `metadata.uid` of the object.
    pub uid: String,
    /// The `status` fields to set (`parents` or `conditions`, whole).
    pub status: Value,
}

/// What the problems of one object amount to.
#[derive(Default)]
struct Verdict {
    errors: Vec<String>,
    warnings: Vec<String>,
    /// Route references that did not resolve: the `ResolvedRefs` reason and the problem.
    unresolved: Vec<(&'static str, String)>,
    /// An error names a parent that does not exist (`NoMatchingParent`).
    unmatched_parent: bool,
    /// A route of a higher-precedence type binds the same Service port (`Conflicted`).
    conflicted: bool,
}

/// Why a route's problem is about one of its references, in the Gateway API's words: a
/// `ResolvedRefs` reason for a backend (`BackendNotFound`, `InvalidKind`,
/// `RefNotPermitted`), or `NoMatchingParent` for a parent. Read from the field the problem
/// names and what it says, as the translation words them.
fn route_reason(p: &Problem) -> Option<&'static str> {
    let missing = ["no Service", "has no port", "has no listener"]
        .iter()
        .any(|m| p.message.contains(m));
    if p.field.starts_with("spec.parentRefs[") {
        return missing.then_some("NoMatchingParent");
    }
    if !p.field.contains(".backendRefs[") || p.field.contains(".filters") {
        return None;
    }
    match p.field.rsplit('.').next() {
        Some("name" | "port") if missing => Some("BackendNotFound"),
        Some("kind") => Some("InvalidKind"),
        Some("namespace") => Some("RefNotPermitted"),
        _ => None,
    }
}

impl Verdict {
    /// Every problem, errors first, as one message.
    fn all(&self) -> String {
        join(&[self.errors.as_slice(), self.warnings.as_slice()].concat())
    }
}

/// The status updates that make every observed object show its current
/// problems: only those whose status differs from the observed one.
///
/// `now` (RFC 3339) stamps conditions whose status changes; a condition
/// that keeps its status keeps its `lastTransitionTime`.
pub fn desired_statuses(
    problems: &[Problem],
    observed: &ObservedMap,
    now: &str,
) -> Vec<StatusUpdate> {
    let mut verdicts: BTreeMap<ObjectKey, Verdict> = BTreeMap::new();
    for p in problems
        .iter()
        .filter(|p| p.origin.starts_with(KUBERNETES_ORIGIN))
    {
        let key = ObjectKey::new(&p.kind, &p.namespace, &p.name);
        if !observed.contains_key(&key) {
            continue;
        }
        let verdict = verdicts.entry(key).or_default();
        let text = describe(p);
        let bare = text
            .strip_prefix(WARNING_PREFIX)
            .unwrap_or(&text)
            .to_string();
        verdict.conflicted |= p.message.contains(ROUTE_TYPE_CONFLICT);
        match route_reason(p) {
            Some("NoMatchingParent") => verdict.unmatched_parent |= !p.is_warning(),
            Some(reason) if !verdict.unresolved.iter().any(|(_, m)| *m == bare) => {
                verdict.unresolved.push((reason, bare.clone()));
            }
            _ => {}
        }
        match text.strip_prefix(WARNING_PREFIX) {
            Some(w) => push_unique(&mut verdict.warnings, w.to_string()),
            None => push_unique(&mut verdict.errors, text),
        }
    }
    let empty = Verdict::default();
    let mut out = Vec::new();
    for (key, obs) in observed {
        let verdict = verdicts.get(key).unwrap_or(&empty);
        let desired = match obs.kind.status {
            StatusStyle::None => None,
            StatusStyle::RouteParents => route_parents(obs, verdict, now),
            StatusStyle::IstioConditions => istio_conditions(key, obs, verdict, now),
        };
        if let Some(status) = desired {
            out.push(StatusUpdate {
                key: key.clone(),
                kind: obs.kind,
                resource_version: obs.resource_version.clone(),
                uid: obs.uid.clone(),
                status,
            });
        }
    }
    out
}

fn push_unique(list: &mut Vec<String>, text: String) {
    if !list.contains(&text) {
        list.push(text);
    }
}

/// `field F: message`, or the message alone.
fn describe(p: &Problem) -> String {
    if p.field.is_empty() {
        p.message.clone()
    } else if let Some(rest) = p.message.strip_prefix(WARNING_PREFIX) {
        // Keep the warning marker in front so it is still recognised.
        format!("{WARNING_PREFIX}{}: {rest}", p.field)
    } else {
        format!("{}: {}", p.field, p.message)
    }
}

/// Joins messages, capped at [`MAX_MESSAGE`] bytes on a character boundary.
fn join(messages: &[String]) -> String {
    let mut text = messages.join("; ");
    if text.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// A condition to hold: (status, reason, message).
struct Wanted<'a> {
    type_: &'a str,
    ok: bool,
    reason: &'a str,
    message: String,
}

impl Wanted<'_> {
    /// The condition as JSON; `generation` is written as Istio's protobuf JSON
    /// (a string) or as Gateway API's integer.
    fn to_json(&self, previous: Option<&Value>, generation: Value, now: &str) -> Value {
        let status = if self.ok { "True" } else { "False" };
        // The transition time moves only when the status does.
        let since = previous
            .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| Value::String(now.to_string()));
        json!({
            "type": self.type_,
            "status": status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": since,
            "observedGeneration": generation,
        })
    }
}

fn array<'a>(value: &'a Value, field: &str) -> &'a [Value] {
    value
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// True for a parentRef to a Service (GAMMA): the ones this controller serves.
fn is_mesh_parent(parent: &Value) -> bool {
    let kind = parent
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Gateway");
    let group = parent
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or("gateway.networking.k8s.io");
    kind == "Service" && (group.is_empty() || group == "core")
}

/// A route's `Accepted` condition: conflicted (valid, but another route type wins the port),
/// accepted (perhaps with warnings), or refused for its errors.
fn accepted(verdict: &Verdict) -> Wanted<'static> {
    if verdict.conflicted && verdict.errors.is_empty() {
        // Not an error of the route: it is valid, but another route type wins the port.
        Wanted {
            type_: "Accepted",
            ok: false,
            reason: "Conflicted",
            message: join(&verdict.warnings),
        }
    } else if verdict.errors.is_empty() {
        let message = if verdict.warnings.is_empty() {
            "Route was valid".to_string()
        } else {
            join(&verdict.warnings)
        };
        Wanted {
            type_: "Accepted",
            ok: true,
            reason: "Accepted",
            message,
        }
    } else {
        Wanted {
            type_: "Accepted",
            ok: false,
            reason: if verdict.unmatched_parent {
                "NoMatchingParent"
            } else {
                "UnsupportedValue"
            },
            message: verdict.all(),
        }
    }
}

fn route_parents(obs: &Observed, verdict: &Verdict, now: &str) -> Option<Value> {
    let wanted = accepted(verdict);
    let resolved = match verdict.unresolved.first() {
        None => Wanted {
            type_: "ResolvedRefs",
            ok: true,
            reason: "ResolvedRefs",
            message: "All references resolved".to_string(),
        },
        Some((reason, _)) => Wanted {
            type_: "ResolvedRefs",
            ok: false,
            reason,
            message: join(
                &verdict
                    .unresolved
                    .iter()
                    .map(|(_, m)| m.clone())
                    .collect::<Vec<_>>(),
            ),
        },
    };
    let mut parents: Vec<&Value> = Vec::new();
    for p in obs.parent_refs.iter().filter(|p| is_mesh_parent(p)) {
        if !parents.contains(&p) {
            parents.push(p);
        }
    }
    let current = array(&obs.status, "parents");
    let ours = |entry: &Value| {
        entry.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
    };
    let entry_for = |parent: &Value| {
        let previous = |type_: &str| {
            current
                .iter()
                .filter(|e| ours(e) && e.get("parentRef") == Some(parent))
                .flat_map(|e| array(e, "conditions"))
                .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        };
        let generation = json!(obs.generation);
        json!({
            "parentRef": parent,
            "controllerName": CONTROLLER_NAME,
            "conditions": [
                wanted.to_json(previous(wanted.type_), generation.clone(), now),
                resolved.to_json(previous(resolved.type_), generation, now),
            ],
        })
    };
    // Entries keep their places (another controller doing the same then
    // never sees its list reordered); ours are replaced, dropped when their
    // parentRef is gone, and new ones appended.
    let mut used = BTreeSet::new();
    let mut desired = Vec::new();
    for entry in current {
        if !ours(entry) {
            desired.push(entry.clone());
            continue;
        }
        let Some(i) = entry
            .get("parentRef")
            .and_then(|r| parents.iter().position(|p| *p == r))
        else {
            continue;
        };
        if used.insert(i) {
            desired.push(entry_for(parents[i]));
        }
    }
    for (i, parent) in parents.iter().enumerate() {
        if !used.contains(&i) {
            desired.push(entry_for(parent));
        }
    }
    (desired.as_slice() != current).then(|| json!({ "parents": desired }))
}

fn istio_conditions(
    key: &ObjectKey,
    obs: &Observed,
    verdict: &Verdict,
    now: &str,
) -> Option<Value> {
    let policy = key.kind == "AuthorizationPolicy";
    let type_ = match key.kind.as_str() {
        "AuthorizationPolicy" if obs.targeted => WAYPOINT_ACCEPTED,
        "AuthorizationPolicy" | "PeerAuthentication" => ZTUNNEL_ACCEPTED,
        _ => WAYPOINT_ACCEPTED,
    };
    let wanted = if !verdict.errors.is_empty() {
        Some(Wanted {
            type_,
            ok: false,
            reason: "Invalid",
            message: verdict.all(),
        })
    } else if !verdict.warnings.is_empty() {
        Some(Wanted {
            type_,
            ok: true,
            reason: "UnsupportedValue",
            message: join(&verdict.warnings),
        })
    } else if policy {
        let message = if obs.targeted {
            "attached to waypoint"
        } else {
            "attached to ztunnel"
        };
        Some(Wanted {
            type_,
            ok: true,
            reason: "Accepted",
            message: message.to_string(),
        })
    } else {
        None
    };
    let current = array(&obs.status, "conditions");
    let is_ours = |c: &Value| {
        matches!(
            c.get("type").and_then(Value::as_str),
            Some(ZTUNNEL_ACCEPTED | WAYPOINT_ACCEPTED)
        )
    };
    let mut desired = Vec::new();
    let mut placed = false;
    for c in current {
        if !is_ours(c) {
            desired.push(c.clone());
            continue;
        }
        // A policy that changed between selector and targetRef changes type:
        // the other type is dropped.
        if let Some(w) = &wanted
            && !placed
            && c.get("type").and_then(Value::as_str) == Some(w.type_)
        {
            desired.push(w.to_json(Some(c), istio_generation(obs.generation), now));
            placed = true;
        }
    }
    if let (Some(w), false) = (&wanted, placed) {
        desired.push(w.to_json(None, istio_generation(obs.generation), now));
    }
    (desired.as_slice() != current).then(|| json!({ "conditions": desired }))
}

/// Istio's status is protobuf JSON, where an int64 is a string.
fn istio_generation(generation: i64) -> Value {
    Value::String(generation.to_string())
}

/// `now` as Kubernetes writes times (RFC 3339, seconds, UTC).
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Errors of one status write; logged, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API server refused or failed the patch.
    #[error("patching the status of {key}: {source}")]
    Patch {
        /// The object.
        key: ObjectKey,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
}

/// How long changes settle before statuses are computed: an edit typically
/// yields a new index and a new translation in quick succession.
const SETTLE: Duration = Duration::from_millis(500);
/// How often writes that failed are retried even without a change.
const RETRY: Duration = Duration::from_secs(30);

/// Writes statuses until either channel closes. `problems` carries the
/// problems of the latest translation (`None` until the first one, so that
/// nothing is written from an incomplete picture); `observed` the objects
/// the Kubernetes source sees.
pub async fn run(
    client: kube::Client,
    problems: watch::Receiver<Option<Arc<Vec<Problem>>>>,
    observed: watch::Receiver<Arc<ObservedMap>>,
) {
    run_while_leading(client, problems, observed, Leadership::always()).await;
}

/// [`run`], writing only while this replica leads: a follower keeps reading, and once it
/// leads writes what the statuses observed then lack.
pub async fn run_while_leading(
    client: kube::Client,
    mut problems: watch::Receiver<Option<Arc<Vec<Problem>>>>,
    mut observed: watch::Receiver<Arc<ObservedMap>>,
    mut leadership: Leadership,
) {
    // What was last sent per object (by uid): not sent again while still desired.
    let mut sent: BTreeMap<ObjectKey, (String, Value)> = BTreeMap::new();
    let mut was_leading = leadership.is_leader();
    loop {
        tokio::select! {
            changed = problems.changed() => if changed.is_err() { return },
            changed = observed.changed() => if changed.is_err() { return },
            () = leadership.changed() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
        let leading = leadership.is_leader();
        if leading && !was_leading {
            // Another replica may have written meanwhile: decide from what is observed.
            sent.clear();
        }
        was_leading = leading;
        if !leading {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        let Some(current) = problems.borrow_and_update().clone() else {
            continue;
        };
        let objects = observed.borrow_and_update().clone();
        sent.retain(|key, _| objects.contains_key(key));
        for update in desired_statuses(&current, &objects, &now_rfc3339()) {
            if !leadership.is_leader() {
                break;
            }
            if sent
                .get(&update.key)
                .is_some_and(|(uid, status)| *uid == update.uid && *status == update.status)
            {
                continue;
            }
            match patch(&client, &update).await {
                Ok(()) => {
                    tracing::debug!(object = %update.key, "status written");
                    sent.insert(update.key, (update.uid, update.status));
                }
                // Gone, or changed since it was observed: the watch brings the
                // new version, and the next round decides again.
                Err(StatusError::Patch { source, .. }) if matches!(&*source, kube::Error::Api(s) if s.is_not_found() || s.is_conflict()) =>
                {
                    sent.remove(&update.key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "status not written; will retry");
                    sent.remove(&update.key);
                }
            }
        }
    }
}

/// Sends one update as a JSON merge patch with the observed resourceVersion
/// as precondition, so a status another writer changed meanwhile is not
/// overwritten from a stale copy.
async fn patch(client: &kube::Client, update: &StatusUpdate) -> Result<(), StatusError> {
    let resource = update.kind.api_resource();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &update.key.namespace, &resource);
    let body = json!({
        "metadata": { "resourceVersion": update.resource_version },
        "status": update.status,
    });
    api.patch_status(
        &update.key.name,
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await
    .map(drop)
    .map_err(|source| StatusError::Patch {
        key: update.key.clone(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests;
