//! Istio traffic objects (`networking.istio.io` v1, v1beta1, v1alpha3):
//! VirtualService, DestinationRule and EnvoyFilter, reduced to the fields the
//! waypoint translation reads. Durations and enumerations stay strings, so an
//! unparseable value is reported for that one object by the translation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::istio::PolicyTargetReference;
use crate::model::kube::ObjectMeta;

/// A `VirtualService`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VirtualService {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: VirtualServiceSpec,
}

/// `VirtualService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VirtualServiceSpec {
    /// Destination hosts: `name`, `name.ns`, or the FQDN.
    pub hosts: Vec<String>,
    /// Gateways; empty or containing `mesh` means the mesh.
    pub gateways: Vec<String>,
    /// HTTP routes, in order.
    pub http: Vec<VsHttpRoute>,
    /// TCP routes (not translated).
    pub tcp: Vec<serde_json::Value>,
    /// TLS routes (not translated).
    pub tls: Vec<serde_json::Value>,
}

/// `spec.http[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsHttpRoute {
    /// Route name.
    pub name: Option<String>,
    /// Alternatives; empty means every request.
    #[serde(rename = "match")]
    pub matches: Vec<VsMatch>,
    /// Weighted destinations.
    pub route: Vec<VsRouteDestination>,
    /// Redirect instead of forwarding.
    pub redirect: Option<VsRedirect>,
    /// Answer directly instead of forwarding.
    pub direct_response: Option<VsDirectResponse>,
    /// Delegation to another VirtualService (not supported).
    pub delegate: Option<serde_json::Value>,
    /// URL rewrite.
    pub rewrite: Option<VsRewrite>,
    /// Whole-request timeout.
    pub timeout: Option<String>,
    /// Retries.
    pub retries: Option<VsRetries>,
    /// Fault injection.
    pub fault: Option<VsFault>,
    /// Single mirror destination.
    pub mirror: Option<VsDestination>,
    /// Share of requests mirrored to `mirror`.
    pub mirror_percentage: Option<VsPercent>,
    /// Deprecated integer form of `mirrorPercentage`.
    pub mirror_percent: Option<u32>,
    /// Several mirrors.
    pub mirrors: Vec<VsMirror>,
    /// CORS (not translated).
    pub cors_policy: Option<serde_json::Value>,
    /// Header edits.
    pub headers: Option<VsHeaders>,
}

/// `http[].match[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsMatch {
    /// Match name.
    pub name: Option<String>,
    /// Path condition.
    pub uri: Option<VsStringMatch>,
    /// Scheme condition.
    pub scheme: Option<VsStringMatch>,
    /// Method condition.
    pub method: Option<VsStringMatch>,
    /// Authority condition.
    pub authority: Option<VsStringMatch>,
    /// Header conditions; an empty match means "present".
    pub headers: BTreeMap<String, VsStringMatch>,
    /// Destination port.
    pub port: Option<u32>,
    /// Source workload labels (not supported at a waypoint).
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match is limited to.
    pub gateways: Vec<String>,
    /// Query parameter conditions.
    pub query_params: BTreeMap<String, VsStringMatch>,
    /// Compare the path case-insensitively.
    pub ignore_uri_case: bool,
    /// Headers that must not match.
    pub without_headers: BTreeMap<String, VsStringMatch>,
    /// Source namespace.
    pub source_namespace: Option<String>,
}

/// Istio's `StringMatch`: exactly one of the fields (or none: "present").
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsStringMatch {
    /// Exact value.
    pub exact: Option<String>,
    /// Prefix.
    pub prefix: Option<String>,
    /// RE2 regular expression (whole value).
    pub regex: Option<String>,
}

/// `http[].route[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsRouteDestination {
    /// Where to send.
    pub destination: VsDestination,
    /// Share of traffic; with one destination, 100 when absent.
    pub weight: Option<i64>,
    /// Header edits for this destination.
    pub headers: Option<VsHeaders>,
}

/// A destination: host, optional subset and port.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsDestination {
    /// Service host (short name, `name.ns` or FQDN).
    pub host: String,
    /// Subset of the host's DestinationRule.
    pub subset: Option<String>,
    /// Port.
    pub port: Option<VsPortSelector>,
}

/// `destination.port`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsPortSelector {
    /// Port number.
    pub number: u32,
}

/// `{value: <percent>}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsPercent {
    /// Percent, 0 to 100.
    pub value: f64,
}

/// `http[].mirrors[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsMirror {
    /// Where copies go.
    pub destination: VsDestination,
    /// Share of requests mirrored; all when absent.
    pub percentage: Option<VsPercent>,
}

/// `headers`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsHeaders {
    /// Request edits.
    pub request: Option<VsHeaderOperations>,
    /// Response edits.
    pub response: Option<VsHeaderOperations>,
}

/// `headers.request` / `headers.response`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsHeaderOperations {
    /// Overwrite.
    pub set: BTreeMap<String, String>,
    /// Append.
    pub add: BTreeMap<String, String>,
    /// Remove.
    pub remove: Vec<String>,
}

/// `http[].redirect`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsRedirect {
    /// New path.
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// New port.
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// New scheme.
    pub scheme: Option<String>,
    /// Status code (301 when absent).
    pub redirect_code: Option<u32>,
}

/// `http[].directResponse`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsDirectResponse {
    /// Status code.
    pub status: u32,
    /// Body.
    pub body: Option<VsBody>,
}

/// `directResponse.body`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64 body.
    pub bytes: Option<String>,
}

/// `http[].rewrite`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsRewrite {
    /// New path (or prefix, after a prefix match).
    pub uri: Option<String>,
    /// New authority.
    pub authority: Option<String>,
    /// Regex rewrite of the path.
    pub uri_regex_rewrite: Option<VsRegexRewrite>,
}

/// `rewrite.uriRegexRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsRegexRewrite {
    /// Pattern.
    #[serde(rename = "match")]
    pub match_: String,
    /// Replacement.
    pub rewrite: String,
}

/// `http[].retries`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsRetries {
    /// Retries after the first attempt.
    pub attempts: Option<i64>,
    /// Timeout of each attempt.
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions and status codes.
    pub retry_on: Option<String>,
    /// Base backoff interval.
    pub backoff: Option<String>,
}

/// `http[].fault`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VsFault {
    /// Delay.
    pub delay: Option<VsDelay>,
    /// Abort.
    pub abort: Option<VsAbort>,
}

/// `fault.delay`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsDelay {
    /// How long.
    pub fixed_delay: Option<String>,
    /// Exponential delay (not supported).
    pub exponential_delay: Option<String>,
    /// Share of requests delayed.
    pub percentage: Option<VsPercent>,
    /// Deprecated integer form of `percentage`.
    pub percent: Option<u32>,
}

/// `fault.abort`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VsAbort {
    /// HTTP status.
    pub http_status: Option<u32>,
    /// gRPC status name (`UNAVAILABLE`) or number.
    pub grpc_status: Option<serde_json::Value>,
    /// HTTP/2 error (not supported).
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    pub percentage: Option<VsPercent>,
}

/// A `DestinationRule`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DestinationRule {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: DestinationRuleSpec,
}

/// `DestinationRule.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DestinationRuleSpec {
    /// Service host (short name, `name.ns` or FQDN).
    pub host: String,
    /// Policy for every endpoint.
    pub traffic_policy: Option<DrTrafficPolicy>,
    /// Named subsets.
    pub subsets: Vec<DrSubset>,
    /// Proxies the rule applies to (not supported at a waypoint).
    pub workload_selector: Option<serde_json::Value>,
}

/// `trafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DrTrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<DrLoadBalancer>,
    /// Connection pool limits.
    pub connection_pool: Option<DrConnectionPool>,
    /// Outlier detection.
    pub outlier_detection: Option<DrOutlierDetection>,
    /// Upstream TLS (not translated: the mesh carries mTLS itself).
    pub tls: Option<serde_json::Value>,
    /// Per-port overrides (not supported).
    pub port_level_settings: Vec<serde_json::Value>,
}

/// `trafficPolicy.loadBalancer`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DrLoadBalancer {
    /// `LEAST_REQUEST`, `ROUND_ROBIN`, `RANDOM`, `PASSTHROUGH`, ...
    pub simple: Option<String>,
    /// Consistent hashing (not supported).
    pub consistent_hash: Option<serde_json::Value>,
}

/// `trafficPolicy.connectionPool`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DrConnectionPool {
    /// TCP settings.
    pub tcp: Option<DrTcpSettings>,
    /// HTTP settings.
    pub http: Option<DrHttpSettings>,
}

/// `connectionPool.tcp`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DrTcpSettings {
    /// Connection limit.
    pub max_connections: Option<i64>,
    /// Connect timeout.
    pub connect_timeout: Option<String>,
}

/// `connectionPool.http`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DrHttpSettings {
    /// Requests waiting for a connection.
    #[serde(rename = "http1MaxPendingRequests")]
    pub http1_max_pending_requests: Option<i64>,
    /// Requests in flight.
    #[serde(rename = "http2MaxRequests")]
    pub http2_max_requests: Option<i64>,
    /// Requests per connection.
    #[serde(rename = "maxRequestsPerConnection")]
    pub max_requests_per_connection: Option<i64>,
    /// Retries in flight.
    #[serde(rename = "maxRetries")]
    pub max_retries: Option<i64>,
}

/// `trafficPolicy.outlierDetection`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DrOutlierDetection {
    /// Consecutive 5xx before ejection.
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    /// Consecutive 502/503/504 before ejection.
    #[serde(rename = "consecutiveGatewayErrors")]
    pub consecutive_gateway_errors: Option<i64>,
    /// Deprecated name of `consecutiveGatewayErrors`.
    #[serde(rename = "consecutiveErrors")]
    pub consecutive_errors: Option<i64>,
    /// Sweep interval.
    pub interval: Option<String>,
    /// Base ejection time.
    #[serde(rename = "baseEjectionTime")]
    pub base_ejection_time: Option<String>,
    /// Most endpoints ejected, percent.
    #[serde(rename = "maxEjectionPercent")]
    pub max_ejection_percent: Option<i64>,
}

/// `subsets[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DrSubset {
    /// Name.
    pub name: String,
    /// Endpoint labels.
    pub labels: BTreeMap<String, String>,
    /// Overrides of the rule's policy.
    pub traffic_policy: Option<DrTrafficPolicy>,
}

/// An `EnvoyFilter`. Its patches are free-form Envoy configuration, read as
/// JSON by the translation.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EnvoyFilter {
    /// Object metadata.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: EnvoyFilterSpec,
}

/// `EnvoyFilter.spec`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvoyFilterSpec {
    /// Proxies the filter applies to, by their pods' labels.
    pub workload_selector: Option<EnvoyFilterSelector>,
    /// Targets (Gateway, Service) for waypoints.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Patches.
    pub config_patches: Vec<EnvoyConfigPatch>,
}

/// `spec.workloadSelector`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EnvoyFilterSelector {
    /// Labels the pods carry.
    pub labels: BTreeMap<String, String>,
}

/// `spec.configPatches[]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvoyConfigPatch {
    /// `HTTP_FILTER`, `CLUSTER`, ...
    pub apply_to: String,
    /// Where the patch applies (free-form).
    #[serde(rename = "match")]
    pub match_: Option<serde_json::Value>,
    /// The patch.
    pub patch: Option<EnvoyPatch>,
}

/// `configPatches[].patch`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EnvoyPatch {
    /// `INSERT_BEFORE`, `MERGE`, ...
    pub operation: String,
    /// The Envoy configuration inserted or merged.
    pub value: serde_json::Value,
}
