//! Gateway API route kinds (`gateway.networking.k8s.io` v1, v1beta1, v1alpha2):
//! HTTPRoute and GRPCRoute, reduced to the fields mesh (GAMMA) routing reads.
//!
//! Enumerations (`type` fields) stay strings so that an unknown value is
//! reported for that one object by the translation.

use serde::Deserialize;

use crate::model::kube::ObjectMeta;

/// An `HTTPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpRoute {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: HttpRouteSpec,
}

/// `HTTPRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteSpec {
    /// What the route attaches to; for mesh routing, Services.
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames; not used for mesh routing (the parent Service decides).
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<HttpRouteRule>,
}

/// `spec.parentRefs[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ParentReference {
    /// API group; `""` or `core` for a Service.
    pub group: Option<String>,
    /// Kind; `Service` for mesh routing (`Gateway` when absent).
    pub kind: Option<String>,
    /// Namespace; absent means the route's own.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Listener name (Gateways only).
    pub section_name: Option<String>,
    /// Service port the route is limited to; absent means every port.
    pub port: Option<u16>,
}

/// `spec.rules[]` of an HTTPRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteRule {
    /// Optional rule name.
    pub name: Option<String>,
    /// Alternatives; absent or empty means "every request" (prefix `/`).
    pub matches: Vec<HttpRouteMatch>,
    /// Filters applied to matching requests.
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends.
    pub backend_refs: Vec<HttpBackendRef>,
    /// Timeouts.
    pub timeouts: Option<HttpRouteTimeouts>,
    /// Retries (GEP-1731).
    pub retry: Option<HttpRouteRetry>,
}

/// `rules[].matches[]` of an HTTPRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteMatch {
    /// Path condition; absent means prefix `/`.
    pub path: Option<HttpPathMatch>,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HttpHeaderMatch>,
    /// Query parameter conditions, all of which must hold.
    pub query_params: Vec<HttpHeaderMatch>,
    /// HTTP method.
    pub method: Option<String>,
}

/// `matches[].path`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// The path; absent means `/`.
    pub value: Option<String>,
}

/// A header or query parameter condition.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpHeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Header or parameter name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// One filter; `type` says which of the other fields is set.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror`,
    /// `RequestRedirect`, `URLRewrite`, `ExtensionRef`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// For `RequestHeaderModifier`.
    pub request_header_modifier: Option<HeaderFilter>,
    /// For `ResponseHeaderModifier`.
    pub response_header_modifier: Option<HeaderFilter>,
    /// For `RequestMirror`.
    pub request_mirror: Option<MirrorFilter>,
    /// For `RequestRedirect`.
    pub request_redirect: Option<RedirectFilter>,
    /// For `URLRewrite`.
    #[serde(rename = "urlRewrite")]
    pub url_rewrite: Option<UrlRewriteFilter>,
    /// For `ExtensionRef`: read so that the unsupported type is what is reported.
    pub extension_ref: Option<serde_json::Value>,
}

/// `requestHeaderModifier` / `responseHeaderModifier`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HeaderFilter {
    /// Headers to overwrite.
    pub set: Vec<HttpHeader>,
    /// Headers to append.
    pub add: Vec<HttpHeader>,
    /// Header names to remove.
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `requestMirror`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MirrorFilter {
    /// Where copies go.
    pub backend_ref: BackendRef,
    /// Share of requests mirrored, percent.
    pub percent: Option<u32>,
    /// Share of requests mirrored, as a fraction.
    pub fraction: Option<Fraction>,
}

/// `requestMirror.fraction`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Fraction {
    /// Numerator.
    pub numerator: u32,
    /// Denominator; absent means 100.
    pub denominator: Option<u32>,
}

/// `requestRedirect`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RedirectFilter {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// New host.
    pub hostname: Option<String>,
    /// New path.
    pub path: Option<PathModifier>,
    /// New port.
    pub port: Option<u16>,
    /// Status code (302 when absent).
    pub status_code: Option<u16>,
}

/// `urlRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UrlRewriteFilter {
    /// New host.
    pub hostname: Option<String>,
    /// New path.
    pub path: Option<PathModifier>,
}

/// A path change of a redirect or rewrite.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    /// For `ReplaceFullPath`.
    pub replace_full_path: Option<String>,
    /// For `ReplacePrefixMatch`.
    pub replace_prefix_match: Option<String>,
}

/// A reference to a backend (a Service).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BackendRef {
    /// API group; `""` or `core` for a Service.
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; absent means the route's own.
    pub namespace: Option<String>,
    /// Service port.
    pub port: Option<u16>,
}

/// `rules[].backendRefs[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpBackendRef {
    /// API group; `""` or `core` for a Service.
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; absent means the route's own.
    pub namespace: Option<String>,
    /// Service port.
    pub port: Option<u16>,
    /// Relative weight; 1 when absent.
    pub weight: Option<u32>,
    /// Filters applied to requests sent to this backend.
    pub filters: Vec<HttpRouteFilter>,
}

/// `rules[].timeouts`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpRouteTimeouts {
    /// Whole request, retries included (`0s`: none).
    pub request: Option<String>,
    /// Each request to a backend (`0s`: none).
    pub backend_request: Option<String>,
}

/// `rules[].retry` (GEP-1731).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct HttpRouteRetry {
    /// Status codes retried.
    pub codes: Vec<u16>,
    /// Retries after the first attempt.
    pub attempts: Option<u32>,
    /// Base backoff interval.
    pub backoff: Option<String>,
}

/// A `GRPCRoute`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GrpcRoute {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: GrpcRouteSpec,
}

/// `GRPCRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteSpec {
    /// What the route attaches to; for mesh routing, Services.
    pub parent_refs: Vec<ParentReference>,
    /// Hostnames; not used for mesh routing.
    pub hostnames: Vec<String>,
    /// Rules.
    pub rules: Vec<GrpcRouteRule>,
}

/// `spec.rules[]` of a GRPCRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GrpcRouteRule {
    /// Optional rule name.
    pub name: Option<String>,
    /// Alternatives; absent or empty means every call.
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters (header modifiers and mirrors).
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends.
    pub backend_refs: Vec<HttpBackendRef>,
    /// Retries (GEP-1731 shape).
    pub retry: Option<HttpRouteRetry>,
}

/// `rules[].matches[]` of a GRPCRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GrpcRouteMatch {
    /// gRPC service and method.
    pub method: Option<GrpcMethodMatch>,
    /// Header conditions.
    pub headers: Vec<HttpHeaderMatch>,
}

/// `matches[].method` of a GRPCRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Fully qualified service (`pkg.Service`); absent means any.
    pub service: Option<String>,
    /// Method; absent means any.
    pub method: Option<String>,
}

/// A `TCPRoute` (`v1alpha2`; mesh attachment to a Service, or to a waypoint Gateway).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TcpRoute {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: TcpRouteSpec,
}

/// `TCPRoute.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpRouteSpec {
    /// Services (GAMMA) or the waypoint Gateway the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// Rules; a TCP connection carries nothing to match on, so only the first is used.
    pub rules: Vec<TcpRouteRule>,
}

/// `spec.rules[]` of a TCPRoute.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TcpRouteRule {
    /// Optional rule name.
    pub name: Option<String>,
    /// Weighted backends.
    pub backend_refs: Vec<TcpBackendRef>,
}

/// `rules[].backendRefs[]` of a TCPRoute: a backend without filters.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TcpBackendRef {
    /// API group; `""` or `core` for a Service.
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// Namespace; absent means the route's own.
    pub namespace: Option<String>,
    /// Service port; required for a Service.
    pub port: Option<u16>,
    /// Relative weight; 1 when absent.
    pub weight: Option<u32>,
}
