//! Traffic objects kept raw in the index (see [`RAW_KINDS`](super::RAW_KINDS))
//! and decoded here, when translated: Gateway API routes, Istio
//! VirtualService / DestinationRule / EnvoyFilter, SMI TrafficSplit and
//! Linkerd ServiceProfile.
//!
//! Decoding at translation time (rather than when the file is read) keeps a
//! type error in one route from holding back the rest of its file, and lets
//! the translator keep serving that object's last good version.

mod gateway_api;
mod networking;
mod traffic;

pub use gateway_api::{
    BackendRef, Fraction, GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec,
    HeaderFilter, HttpBackendRef, HttpHeader, HttpHeaderMatch, HttpPathMatch, HttpRoute,
    HttpRouteFilter, HttpRouteMatch, HttpRouteRetry, HttpRouteRule, HttpRouteSpec,
    HttpRouteTimeouts, MirrorFilter, ParentReference, PathModifier, RedirectFilter, TcpBackendRef,
    TcpRoute, TcpRouteRule, TcpRouteSpec, UrlRewriteFilter,
};
pub use networking::{
    DestinationRule, DestinationRuleSpec, DrConnectionPool, DrHttpSettings, DrLoadBalancer,
    DrOutlierDetection, DrSubset, DrTcpSettings, DrTrafficPolicy, EnvoyConfigPatch, EnvoyFilter,
    EnvoyFilterSelector, EnvoyFilterSpec, EnvoyPatch, VirtualService, VirtualServiceSpec, VsAbort,
    VsBody, VsDelay, VsDestination, VsDirectResponse, VsFault, VsHeaderOperations, VsHeaders,
    VsHttpRoute, VsMatch, VsMirror, VsPercent, VsPortSelector, VsRedirect, VsRegexRewrite,
    VsRetries, VsRewrite, VsRouteDestination, VsStringMatch,
};
pub use traffic::{
    ProfileRoute, RequestMatch, RetryBudgetSpec, ServiceProfile, ServiceProfileSpec, TrafficSplit,
    TrafficSplitBackend, TrafficSplitSpec, WeightedDst,
};

use serde::de::DeserializeOwned;

/// A raw object that does not have the shape of its kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// Path of the offending field (`spec.rules[0].matches`), may be empty.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Decodes a raw object (kept as JSON) into its typed form.
pub fn decode<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, DecodeError> {
    // The YAML decoder reports the field path of an error, which serde_json
    // does not; JSON text is YAML, so the stored value goes through it.
    let text = serde_json::to_string(value).map_err(|e| DecodeError {
        field: String::new(),
        message: e.to_string(),
    })?;
    serde_yaml_ng::from_str(&text).map_err(|e| {
        let (field, message) = super::yaml_error::split_error(&e.to_string());
        DecodeError { field, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_errors_name_the_field() {
        let value = serde_json::json!({
            "metadata": {"name": "r"},
            "spec": {"rules": [{"backendRefs": [{"name": "a", "port": "eighty"}]}]}
        });
        let err = decode::<HttpRoute>(&value).unwrap_err();
        assert_eq!(err.field, "spec.rules[0].backendRefs[0].port");
        assert!(err.message.contains("invalid type"), "{err}");
        assert!(!err.message.contains("line"), "{err}");
        let ok: HttpRoute = decode(&serde_json::json!({"spec": {"rules": [{}]}})).unwrap();
        assert_eq!(ok.spec.rules.len(), 1);
    }
}
