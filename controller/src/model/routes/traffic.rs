//! SMI `TrafficSplit` (`split.smi-spec.io` v1alpha1 to v1alpha4) and Linkerd
//! `ServiceProfile` (`linkerd.io/v1alpha2`).
//!
//! Weights stay JSON values: SMI v1alpha1 writes them as Kubernetes
//! quantities (`"900m"`), later versions as integers, and the translation
//! reports a bad one for that object alone.

use serde::Deserialize;

use crate::model::kube::ObjectMeta;

/// A `TrafficSplit`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrafficSplit {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: TrafficSplitSpec,
}

/// `TrafficSplit.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrafficSplitSpec {
    /// The apex service clients address (name, or FQDN in v1alpha1).
    pub service: String,
    /// Weighted backend services.
    pub backends: Vec<TrafficSplitBackend>,
    /// Route groups limiting the split (v1alpha3+, not supported).
    pub matches: Vec<serde_json::Value>,
}

/// `spec.backends[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TrafficSplitBackend {
    /// Backend service name.
    pub service: String,
    /// Weight: integer, or a quantity such as `500m`.
    pub weight: serde_json::Value,
}

/// A `ServiceProfile`; its name is the service's FQDN.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServiceProfile {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: ServiceProfileSpec,
}

/// `ServiceProfile.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceProfileSpec {
    /// Routes, for per-route timeouts and retries.
    pub routes: Vec<ProfileRoute>,
    /// Budget limiting retries to the service.
    pub retry_budget: Option<RetryBudgetSpec>,
    /// Weighted authorities replacing the service as destination.
    pub dst_overrides: Vec<WeightedDst>,
}

/// `spec.routes[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProfileRoute {
    /// Route name.
    pub name: String,
    /// Which requests belong to the route.
    pub condition: Option<RequestMatch>,
    /// Failure classification (used for metrics only).
    pub response_classes: Vec<serde_json::Value>,
    /// Requests may be retried.
    pub is_retryable: bool,
    /// Request timeout.
    pub timeout: Option<String>,
}

/// A request condition; composite forms nest.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestMatch {
    /// Every one matches.
    pub all: Vec<RequestMatch>,
    /// At least one matches.
    pub any: Vec<RequestMatch>,
    /// This does not match.
    pub not: Option<Box<RequestMatch>>,
    /// The path matches this regular expression (whole path).
    pub path_regex: Option<String>,
    /// The method is this one.
    pub method: Option<String>,
}

/// `spec.retryBudget`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RetryBudgetSpec {
    /// Ratio of retries to requests.
    pub retry_ratio: f64,
    /// Retries always allowed per second.
    pub min_retries_per_second: u32,
    /// Counting window.
    pub ttl: String,
}

/// `spec.dstOverrides[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct WeightedDst {
    /// `<service FQDN>[:<port>]`.
    pub authority: String,
    /// Weight: integer or quantity.
    pub weight: serde_json::Value,
}
