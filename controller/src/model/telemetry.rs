//! Istio's `Telemetry` (telemetry.istio.io `v1` and `v1alpha1`, which share one schema) and
//! the part of Istio's MeshConfig that telemetry reads: the `mesh` key of the `istio`
//! ConfigMap in the root namespace. Both are kept raw in the index and decoded when
//! translated (see [`crate::translate`]), so a bad edit leaves the last good version in force.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::istio::{PolicyTargetReference, WorkloadSelector};
use super::kube::ObjectMeta;

/// Name of the ConfigMap holding the mesh config, as Istio names it.
pub const MESH_CONFIG_MAP: &str = "istio";

/// Key of that ConfigMap holding the MeshConfig YAML.
pub const MESH_CONFIG_KEY: &str = "mesh";

/// A `Telemetry`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Telemetry {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// What it configures.
    pub spec: TelemetrySpec,
}

/// A Telemetry's spec: where it applies, and tracing, access logging and metrics settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TelemetrySpec {
    /// Workloads selected by label (not waypoints: Istio applies these to sidecars only).
    pub selector: Option<WorkloadSelector>,
    /// The object it applies to (deprecated single form of `targetRefs`).
    pub target_ref: Option<PolicyTargetReference>,
    /// The objects it applies to: a waypoint Gateway, or a Service.
    pub target_refs: Vec<PolicyTargetReference>,
    /// Tracing settings; the first entry is used.
    pub tracing: Vec<TracingEntry>,
    /// Access logging settings; the first entry is used.
    pub access_logging: Vec<AccessLoggingEntry>,
    /// Metrics settings.
    pub metrics: Vec<MetricsEntry>,
}

/// Which side of a request a setting applies to.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ModeMatch {
    /// `CLIENT_AND_SERVER` (default), `CLIENT` or `SERVER`.
    pub mode: Option<String>,
}

/// A provider named by a Telemetry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProviderRef {
    /// Its name among the mesh config's extension providers.
    pub name: String,
}

/// One `tracing[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingEntry {
    /// Side of the request it applies to.
    #[serde(rename = "match")]
    pub match_: Option<ModeMatch>,
    /// Providers spans are sent to.
    pub providers: Vec<ProviderRef>,
    /// Tags added to every span, by tag name.
    pub custom_tags: BTreeMap<String, CustomTagSpec>,
    /// Percentage (0-100) of new traces sampled.
    pub random_sampling_percentage: Option<f64>,
    /// Sample and propagate, but report no span.
    pub disable_span_reporting: Option<bool>,
    /// Whether the request id decides sampling (Envoy's behaviour).
    pub use_request_id_for_trace_sampling: Option<bool>,
}

/// Where a custom tag's value comes from: exactly one of the three.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct CustomTagSpec {
    /// A fixed value.
    pub literal: Option<LiteralValue>,
    /// An environment variable of the proxy.
    pub environment: Option<NamedValue>,
    /// A request header.
    pub header: Option<NamedValue>,
}

/// A fixed tag value.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LiteralValue {
    /// The value.
    pub value: String,
}

/// A header or environment variable, with the value used when it is absent.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NamedValue {
    /// Header or variable name.
    pub name: String,
    /// Value when absent.
    pub default_value: Option<String>,
}

/// One `accessLogging[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AccessLoggingEntry {
    /// Side of the request it applies to.
    #[serde(rename = "match")]
    pub match_: Option<ModeMatch>,
    /// Providers the lines go to.
    pub providers: Vec<ProviderRef>,
    /// No access log lines.
    pub disabled: Option<bool>,
    /// A CEL expression choosing the requests logged.
    pub filter: Option<LogFilter>,
}

/// An access log filter.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LogFilter {
    /// CEL expression.
    pub expression: String,
}

/// One `metrics[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricsEntry {
    /// Providers the metrics go to.
    pub providers: Vec<ProviderRef>,
    /// Changes to metrics.
    pub overrides: Vec<MetricsOverride>,
    /// How often metrics are reported (a duration).
    pub reporting_interval: Option<String>,
}

/// One change to metrics.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricsOverride {
    /// The metrics changed (all when absent).
    #[serde(rename = "match")]
    pub match_: Option<MetricSelector>,
    /// The metric is not recorded.
    pub disabled: Option<bool>,
    /// Label changes, by label name.
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metrics an override changes.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricSelector {
    /// One of Istio's standard metrics (`REQUEST_COUNT`, ...) or `ALL_METRICS`.
    pub metric: Option<String>,
    /// A metric by free-form name.
    pub custom_metric: Option<String>,
    /// Side of the request.
    pub mode: Option<String>,
}

/// A change to one label.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TagOverride {
    /// `UPSERT` (default) or `REMOVE`.
    pub operation: Option<String>,
    /// CEL expression giving the value (UPSERT).
    pub value: Option<String>,
}

/// The part of Istio's MeshConfig that telemetry reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// Providers Telemetry resources name.
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used where no Telemetry names one.
    pub default_providers: DefaultProviders,
    /// Proxy defaults.
    pub default_config: ProxyDefaults,
}

/// A named extension provider; only `opentelemetry` is acted on, other kinds are reported.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ExtensionProvider {
    /// The name Telemetry resources use.
    pub name: String,
    /// An OpenTelemetry (OTLP/gRPC) collector.
    pub opentelemetry: Option<OpenTelemetryProvider>,
}

/// An OTLP collector.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenTelemetryProvider {
    /// Collector Service hostname (`otel.observability.svc.cluster.local`).
    pub service: String,
    /// Collector port.
    pub port: u32,
    /// Longest tag value.
    pub max_tag_length: Option<u32>,
    /// OTLP/HTTP export instead of OTLP/gRPC.
    pub http: Option<OtlpHttp>,
    /// OTLP/gRPC export settings.
    pub grpc: Option<OtlpGrpc>,
}

/// `opentelemetry.http`: export over OTLP/HTTP.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OtlpHttp {
    /// Where batches are POSTed (`/v1/traces`).
    pub path: String,
    /// Deadline of one export (`10s`).
    pub timeout: Option<String>,
    /// Request headers.
    pub headers: Vec<ProviderHeader>,
}

/// `opentelemetry.grpc`: settings of OTLP/gRPC export.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OtlpGrpc {
    /// Deadline of one export (`10s`).
    pub timeout: Option<String>,
    /// Metadata sent with every call.
    pub initial_metadata: Vec<ProviderHeader>,
}

/// A header of an export call: a value, or the name of an environment variable of the control
/// plane that holds it (as istiod reads it).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderHeader {
    /// Header name.
    pub name: String,
    /// Its value.
    pub value: Option<String>,
    /// The controller's environment variable holding its value.
    pub env_name: Option<String>,
}

/// `defaultProviders`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    /// Tracing providers.
    pub tracing: Vec<String>,
    /// Access log providers.
    pub access_logging: Vec<String>,
    /// Metrics providers.
    pub metrics: Vec<String>,
}

/// `defaultConfig`: proxy defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProxyDefaults {
    /// Tracing defaults.
    pub tracing: ProxyTracing,
}

/// `defaultConfig.tracing`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProxyTracing {
    /// Mesh default sampling percentage.
    pub sampling: Option<f64>,
}
