//! Linkerd's authorization policy kinds (`policy.linkerd.io`): `Server` (v1beta1 to v1beta3),
//! `AuthorizationPolicy`, `MeshTLSAuthentication`, `NetworkAuthentication` and
//! `HTTPLocalRateLimitPolicy` (v1alpha1).
//!
//! They are kept raw in the index, like the traffic kinds, and decoded into these shapes when
//! translated (`translate/linkerd_policy`), so that one bad object is reported and fails closed
//! on its own. Linkerd's `AuthorizationPolicy` shares its kind name with Istio's: the index
//! keys it as [`LINKERD_AUTHORIZATION_POLICY`], the kind qualified by its group as `kubectl`
//! accepts it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::kube::IntOrString;

/// Linkerd's policy API group.
pub const LINKERD_POLICY_GROUP: &str = "policy.linkerd.io";

/// The index's kind for Linkerd's `AuthorizationPolicy` (Istio's has the plain name).
pub const LINKERD_AUTHORIZATION_POLICY: &str = "AuthorizationPolicy.policy.linkerd.io";

/// The index's kind for Linkerd's `HTTPRoute` (the Gateway API's has the plain name; both
/// share one schema and are translated alike).
pub const LINKERD_HTTP_ROUTE: &str = "HTTPRoute.policy.linkerd.io";

/// The kinds of [`LINKERD_POLICY_GROUP`] kept raw for the Linkerd policy translation, by the
/// kind name a manifest uses and the one the index keys them by.
pub const LINKERD_POLICY_KINDS: &[(&str, &str)] = &[
    ("Server", "Server"),
    ("AuthorizationPolicy", LINKERD_AUTHORIZATION_POLICY),
    ("MeshTLSAuthentication", "MeshTLSAuthentication"),
    ("NetworkAuthentication", "NetworkAuthentication"),
    ("HTTPLocalRateLimitPolicy", "HTTPLocalRateLimitPolicy"),
    ("HTTPRoute", LINKERD_HTTP_ROUTE),
];

/// Annotation on a Namespace or a Pod (the pod's wins) choosing the policy of the ports no
/// Server selects.
pub const DEFAULT_INBOUND_POLICY: &str = "config.linkerd.io/default-inbound-policy";

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, ANDed).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    /// Labels a pod must all carry.
    pub match_labels: BTreeMap<String, String>,
    /// Requirements a pod must all meet.
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LabelRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    pub values: Vec<String>,
}

/// `Server.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerSpec {
    /// Pods of the Server's namespace; an empty selector selects them all.
    pub pod_selector: Option<LabelSelector>,
    /// ExternalWorkloads (VMs): not modelled by the mesh.
    pub external_workload_selector: Option<serde_json::Value>,
    /// A container port number or name.
    pub port: Option<IntOrString>,
    /// Protocol detection hint; informational here (ztunnel authorizes at L4).
    pub proxy_protocol: Option<String>,
    /// v1beta3: what applies when no authorization admits a connection (`deny` by default).
    pub access_policy: Option<String>,
}

/// A reference to another object (`targetRef`, `requiredAuthenticationRefs[]`,
/// `identityRefs[]`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LinkerdRef {
    /// API group (`policy.linkerd.io`, `core` or empty for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Name (`*` in identity references: every one).
    pub name: String,
    /// Namespace; empty means the referring object's own.
    pub namespace: String,
}

/// Linkerd `AuthorizationPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LinkerdAuthorizationPolicySpec {
    /// A Server, a Namespace (every Server of it), or an HTTPRoute / GRPCRoute.
    pub target_ref: LinkerdRef,
    /// Authentications a client must all satisfy.
    pub required_authentication_refs: Vec<LinkerdRef>,
}

/// `MeshTLSAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshTlsAuthenticationSpec {
    /// Linkerd identities (`<sa>.<ns>.serviceaccount.identity.linkerd.<domain>`, `*`).
    pub identities: Vec<String>,
    /// ServiceAccounts or Namespaces whose identities are admitted.
    pub identity_refs: Vec<LinkerdRef>,
}

/// `NetworkAuthentication.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NetworkAuthenticationSpec {
    /// Client networks admitted.
    pub networks: Vec<Network>,
}

/// One network of a NetworkAuthentication.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Network {
    /// The network.
    pub cidr: String,
    /// Parts of it that are not admitted.
    pub except: Vec<String>,
}

/// `HTTPLocalRateLimitPolicy.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpLocalRateLimitPolicySpec {
    /// The Server limited.
    pub target_ref: LinkerdRef,
    /// All requests to the Server; unset: no overall limit.
    pub total: Option<RequestsPerSecond>,
    /// Each client identity's requests.
    pub identity: Option<RequestsPerSecond>,
    /// Limits of named clients, instead of the identity limit.
    pub overrides: Vec<RateLimitOverride>,
}

/// A rate (`requestsPerSecond`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestsPerSecond {
    /// Requests per second.
    pub requests_per_second: i64,
}

/// One override of an HTTPLocalRateLimitPolicy.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitOverride {
    /// Requests per second of these clients.
    pub requests_per_second: i64,
    /// The clients (ServiceAccounts).
    pub client_refs: Vec<LinkerdRef>,
}
