//! An object of a kind the controller reads, and its key.

use super::istio::{AuthorizationPolicy, PeerAuthentication};
use super::kube::{Gateway, Namespace, ObjectMeta, Pod, Service};
use super::problem::Problem;

/// Kinds kept as raw JSON: stored and listed as they are, decoded (see
/// [`routes`](super::routes) and [`telemetry`](super::telemetry)) and translated into waypoint
/// configuration. The mesh config's ConfigMap is kept raw too (see [`parse_documents`]).
pub const RAW_KINDS: &[&str] = &[
    "HTTPRoute",
    super::linkerd::LINKERD_HTTP_ROUTE,
    "GRPCRoute",
    "TCPRoute",
    "VirtualService",
    "DestinationRule",
    "TrafficSplit",
    "ServiceProfile",
    "EnvoyFilter",
    "Telemetry",
];

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Namespace; empty for `Namespace` objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A decoded object of one of the kinds the controller understands.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// `v1/Namespace`.
    Namespace(Namespace),
    /// `v1/Pod`.
    Pod(Pod),
    /// `v1/Service`.
    Service(Service),
    /// Gateway API `Gateway`.
    Gateway(Gateway),
    /// Istio `AuthorizationPolicy`.
    AuthorizationPolicy(AuthorizationPolicy),
    /// Istio `PeerAuthentication`.
    PeerAuthentication(PeerAuthentication),
    /// Any kind of [`RAW_KINDS`], kept verbatim.
    Raw {
        /// The object's kind.
        kind: String,
        /// The object's metadata (for its key).
        metadata: ObjectMeta,
        /// The whole object.
        value: serde_json::Value,
    },
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> &str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Service(_) => "Service",
            Object::Gateway(_) => "Gateway",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::Raw { kind, .. } => kind,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Raw { metadata, .. } => metadata,
        }
    }

    /// Why a security policy could not be read in full (it is kept to fail closed).
    pub fn unreadable(&self) -> Option<&Problem> {
        match self {
            Object::AuthorizationPolicy(o) => o.unreadable.as_deref(),
            Object::PeerAuthentication(o) => o.unreadable.as_deref(),
            _ => None,
        }
    }

    /// The problem of an unreadable security policy, to edit.
    pub fn unreadable_mut(&mut self) -> Option<&mut Problem> {
        match self {
            Object::AuthorizationPolicy(o) => o.unreadable.as_deref_mut(),
            Object::PeerAuthentication(o) => o.unreadable.as_deref_mut(),
            _ => None,
        }
    }

    /// The object's key. Namespaced kinds without a namespace were already
    /// defaulted to `default` when parsed.
    pub fn key(&self) -> ObjectKey {
        let m = self.metadata();
        ObjectKey::new(self.kind(), &m.namespace, &m.name)
    }
}
