//! What the Kubernetes source saw of each object: read by the status writer, which compares
//! it with what translation found, and by the Event writer (the uid an Event regards).

use std::collections::BTreeMap;

use serde_json::Value;

use super::kinds::WatchedKind;
use crate::model::ObjectKey;

/// Prefix of the origin of every object read from the Kubernetes API.
pub const KUBERNETES_ORIGIN: &str = "kubernetes:";

/// What the controller last saw of an object. For kinds without a status only `kind` and
/// `uid` are kept, so that their other changes (a pod's status) reach no writer.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The object's kind and where its API lives.
    pub kind: &'static WatchedKind,
    /// `metadata.generation` (0 when absent).
    pub generation: i64,
    /// `metadata.resourceVersion`: the precondition of the write.
    pub resource_version: String,
    /// `metadata.uid`: a deleted and recreated object is another object.
    pub uid: String,
    /// The current `status` (`null` when absent).
    pub status: Value,
    /// `spec.parentRefs` (routes).
    pub parent_refs: Vec<Value>,
    /// `spec.targetRef` or `spec.targetRefs` is set (policies bound to waypoints).
    pub targeted: bool,
}

/// Observed objects by key.
pub type ObservedMap = BTreeMap<ObjectKey, Observed>;
