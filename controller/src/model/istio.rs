//! Istio security objects (`security.istio.io` v1 and v1beta1 share one shape).
//!
//! Enumerations (action, mTLS mode) stay strings here so that an unknown
//! value is reported by the translation for that one object, which then keeps
//! its last good translation, instead of failing the whole document. A policy
//! whose document cannot be decoded at all is kept too, with what could be
//! read of it and the reason, so that translation fails it closed rather than
//! skipping it (see `parse`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::kube::ObjectMeta;
use super::problem::Problem;

/// `selector: {matchLabels: ...}` of Istio policies.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkloadSelector {
    /// Labels a pod must all carry.
    pub match_labels: BTreeMap<String, String>,
}

/// A reference to the object a policy attaches to (waypoint-bound policies).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyTargetReference {
    /// API group (empty for core).
    pub group: String,
    /// Kind (`Gateway`, `Service`, ...).
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace; empty means the policy's own.
    pub namespace: String,
}

/// An `AuthorizationPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuthorizationPolicy {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: AuthorizationPolicySpec,
    /// Why the object could not be read in full; `spec` then holds only what could be read
    /// (selector, targets, action) and no rules.
    #[serde(skip)]
    pub unreadable: Option<Box<Problem>>,
}

/// `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to; absent means the whole namespace.
    pub selector: Option<WorkloadSelector>,
    /// Single target (deprecated form of `targetRefs`).
    pub target_ref: Option<PolicyTargetReference>,
    /// Targets (Gateway / Service) enforced by a waypoint.
    pub target_refs: Vec<PolicyTargetReference>,
    /// `ALLOW` (default), `DENY`, `AUDIT`, `CUSTOM`.
    pub action: Option<String>,
    /// Rules; a request matching any rule matches the policy.
    pub rules: Vec<AuthorizationRule>,
    /// The external authorizer of a `CUSTOM` policy; read but not called: CUSTOM is enforced
    /// as DENY of what it would send to the provider.
    pub provider: Option<serde_json::Value>,
}

/// One rule: every present part (`from`, `to`, `when`) must match.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AuthorizationRule {
    /// Sources; any entry may match.
    pub from: Vec<RuleFrom>,
    /// Operations; any entry may match.
    pub to: Vec<RuleTo>,
    /// Extra conditions; all must match.
    pub when: Vec<Condition>,
}

/// `rules[].from[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RuleFrom {
    /// The source.
    pub source: Source,
}

/// `rules[].from[].source`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Source {
    /// Peer identities (`<trust-domain>/ns/<ns>/sa/<sa>`).
    pub principals: Vec<String>,
    /// Negated peer identities.
    pub not_principals: Vec<String>,
    /// JWT principals (L7).
    pub request_principals: Vec<String>,
    /// Negated JWT principals (L7).
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    pub namespaces: Vec<String>,
    /// Negated peer namespaces.
    pub not_namespaces: Vec<String>,
    /// Peer service accounts (`sa` or `ns/sa`).
    pub service_accounts: Vec<String>,
    /// Negated peer service accounts.
    pub not_service_accounts: Vec<String>,
    /// Peer IPs / CIDRs.
    pub ip_blocks: Vec<String>,
    /// Negated peer IPs / CIDRs.
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs from headers (L7).
    pub remote_ip_blocks: Vec<String>,
    /// Negated original client IPs (L7).
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[].to[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RuleTo {
    /// The operation.
    pub operation: Operation,
}

/// `rules[].to[].operation`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Operation {
    /// Destination ports (strings, as in Istio's API).
    pub ports: Vec<String>,
    /// Negated destination ports.
    pub not_ports: Vec<String>,
    /// HTTP hosts (L7).
    pub hosts: Vec<String>,
    /// Negated HTTP hosts (L7).
    pub not_hosts: Vec<String>,
    /// HTTP methods (L7).
    pub methods: Vec<String>,
    /// Negated HTTP methods (L7).
    pub not_methods: Vec<String>,
    /// HTTP paths (L7).
    pub paths: Vec<String>,
    /// Negated HTTP paths (L7).
    pub not_paths: Vec<String>,
}

/// `rules[].when[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Attribute (`source.ip`, `request.headers[x]`, ...).
    pub key: String,
    /// Accepted values.
    pub values: Vec<String>,
    /// Rejected values.
    pub not_values: Vec<String>,
}

/// A `PeerAuthentication`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PeerAuthentication {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: PeerAuthenticationSpec,
    /// Why the object could not be read in full; `spec` then holds only its selector.
    #[serde(skip)]
    pub unreadable: Option<Box<Problem>>,
}

/// `PeerAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; absent means namespace (or mesh) wide.
    pub selector: Option<WorkloadSelector>,
    /// Default mode for all ports.
    pub mtls: Option<MutualTls>,
    /// Per-port modes, keyed by the workload's port number.
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// `mtls` / `portLevelMtls[*]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MutualTls {
    /// `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`.
    pub mode: Option<String>,
}
