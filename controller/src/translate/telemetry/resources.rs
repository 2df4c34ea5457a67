//! One `Telemetry` → what it sets and where: its scope (the whole namespace, a waypoint
//! Gateway, a Service), its tracing settings, access logging switch and metric overrides.
//! Everything it says that the waypoint does not act on is reported as a warning with a hint.

use api::waypoint::{CustomTag, Header, MetricOverride, ValueFrom, custom_tag};

use super::super::bindings::Bindings;
use super::super::routes::{Catalog, Invalid, Obj};
use super::super::service_key::ServiceKey;
use super::super::waypoints::Waypoints;
use super::mesh::{Declared, MeshSettings};
use crate::model::telemetry::{
    AccessLoggingEntry, CustomTagSpec, MetricsEntry, MetricsOverride, Telemetry, TracingEntry,
};
use crate::model::{PolicyTargetReference, Problem, WARNING_PREFIX};

/// Istio's standard request metrics, which the waypoint reports.
const REQUEST_METRICS: &[&str] = &[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
];

/// Istio's gRPC message counts, which the waypoint does not record.
const GRPC_MESSAGE_METRICS: &[&str] = &["GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES"];

/// Istio's TCP metrics: reported by ztunnel, which reads only access logging switches.
const TCP_METRICS: &[&str] = &[
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
];

const ZTUNNEL: &str = "ztunnel reads only accessLogging, mesh-wide, namespace-wide or by selector";

/// What the checks of a Telemetry look up.
pub(crate) struct Context<'a> {
    /// Services.
    pub catalog: &'a Catalog<'a>,
    /// Declared providers.
    pub mesh: &'a MeshSettings,
    /// Waypoint Gateways.
    pub waypoints: &'a Waypoints,
    /// Services served by a waypoint.
    pub bindings: &'a Bindings,
    /// The namespace whose namespace-wide Telemetry applies mesh-wide.
    pub root_namespace: &'a str,
}

/// Where a Telemetry applies, within its own namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole namespace (the whole mesh in the root namespace).
    Namespace,
    /// The waypoint Gateway of this name.
    Gateway(String),
    /// The Service of this name.
    Service(String),
    /// The pods of its namespace (every namespace, in the root namespace) carrying these
    /// labels: for ztunnel's access logging only (Istio applies selectors to the workloads'
    /// own proxies, never to waypoints).
    Selector(std::collections::BTreeMap<String, String>),
}

/// The tracing provider a Telemetry selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// An OTLP provider of the mesh config.
    Named(String),
    /// A name that is not declared, or not an OTLP provider: tracing is off.
    Unusable,
}

/// What `tracing[0]` sets; unset fields are inherited.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TracingSettings {
    /// The provider, when it names one.
    pub provider: Option<Provider>,
    /// Sampling percentage.
    pub sampling: Option<f64>,
    /// Report no spans.
    pub disable_span_reporting: Option<bool>,
    /// Tags, merged by name with the inherited ones.
    pub custom_tags: Vec<CustomTag>,
}

/// What one Telemetry sets.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    /// The object.
    pub obj: Obj,
    /// Where it applies (empty: nowhere the waypoint reads).
    pub scopes: Vec<Scope>,
    /// Tracing.
    pub tracing: Option<TracingSettings>,
    /// Access logging off (or back on).
    pub access_log_disabled: Option<bool>,
    /// Metric changes, applied after the inherited ones.
    pub overrides: Vec<MetricOverride>,
}

/// Translates one Telemetry, pushing warnings on `w`.
pub(crate) fn settings(
    obj: &Obj,
    telemetry: &Telemetry,
    ctx: &Context<'_>,
    w: &mut Vec<Problem>,
) -> Result<Settings, Invalid> {
    let spec = &telemetry.spec;
    let mut warn = |field: String, message: String| {
        w.push(obj.problem(field, format!("{WARNING_PREFIX}{message}")));
    };
    let scopes = scopes(obj, telemetry, ctx, &mut warn);
    let tracing = spec
        .tracing
        .first()
        .and_then(|t| tracing(t, ctx.mesh, &mut warn));
    for i in 1..spec.tracing.len() {
        warn(
            format!("spec.tracing[{i}]"),
            "only the first tracing entry is used".into(),
        );
    }
    let access_log_disabled = spec
        .access_logging
        .first()
        .and_then(|a| access_logging(a, &mut warn));
    for i in 1..spec.access_logging.len() {
        warn(
            format!("spec.accessLogging[{i}]"),
            "only the first accessLogging entry is used".into(),
        );
    }
    let mut overrides = Vec::new();
    for (j, entry) in spec.metrics.iter().enumerate() {
        metrics(j, entry, &mut overrides, &mut warn);
    }
    let namespace = &obj.namespace;
    if matches!(scopes.as_slice(), [Scope::Selector(_)])
        && (tracing.is_some() || !overrides.is_empty())
    {
        let hint = if namespace_served(ctx, namespace) {
            "a selector applies to ztunnel's access logging only, never to waypoints (as in \
             Istio): its tracing and metrics have no effect; use targetRefs to the waypoint \
             Gateway or to the Service"
                .to_string()
        } else {
            format!("its tracing and metrics have no effect ({ZTUNNEL})")
        };
        warn("spec.selector".into(), hint);
    }
    if scopes == [Scope::Namespace]
        && *namespace != ctx.root_namespace
        && !namespace_served(ctx, namespace)
        && (tracing.is_some() || !overrides.is_empty())
    {
        warn(
            String::new(),
            format!(
                "no Service of namespace {namespace} is served by a waypoint: its tracing and \
                 metrics have no effect ({ZTUNNEL})"
            ),
        );
    }
    Ok(Settings {
        obj: obj.clone(),
        scopes,
        tracing,
        access_log_disabled,
        overrides,
    })
}

/// Whether a waypoint serves any Service of `namespace`.
fn namespace_served(ctx: &Context<'_>, namespace: &str) -> bool {
    ctx.bindings
        .services
        .keys()
        .any(|k| k.namespace == namespace)
}

/// Where `telemetry` applies: its namespace, the workloads its selector picks (for ztunnel's
/// access logging), or its targets; warns about targets no waypoint reads.
fn scopes(
    obj: &Obj,
    telemetry: &Telemetry,
    ctx: &Context<'_>,
    warn: &mut impl FnMut(String, String),
) -> Vec<Scope> {
    let spec = &telemetry.spec;
    let namespace = &obj.namespace;
    let served = |name: &str| {
        ctx.bindings
            .services
            .contains_key(&ServiceKey::new(namespace, name))
    };
    let targets: Vec<(String, &PolicyTargetReference)> = match &spec.target_ref {
        Some(one) => vec![("spec.targetRef".to_string(), one)],
        None => spec
            .target_refs
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t))
            .collect(),
    };
    if let Some(selector) = &spec.selector {
        if !targets.is_empty() {
            warn(
                "spec.selector".into(),
                "a selector beside targetRefs is not used (Istio refuses the pair): the \
                 targetRefs apply"
                    .into(),
            );
        } else {
            return vec![Scope::Selector(selector.match_labels.clone())];
        }
    }
    if targets.is_empty() {
        return vec![Scope::Namespace];
    }
    let mut out = Vec::new();
    for (field, target) in targets {
        let group = target.group.as_str();
        match target.kind.as_str() {
            "Gateway" if group == "gateway.networking.k8s.io" => {
                if ctx.waypoints.get(namespace, &target.name).is_some() {
                    out.push(Scope::Gateway(target.name.clone()));
                } else {
                    warn(
                        format!("{field}.name"),
                        format!(
                            "{namespace}/{} is not a waypoint Gateway (gatewayClassName: \
                             istio-waypoint): this target has no effect",
                            target.name
                        ),
                    );
                }
            }
            "Service" if group.is_empty() || group == "core" => {
                let key = ServiceKey::new(namespace, &target.name);
                if served(&target.name) {
                    out.push(Scope::Service(target.name.clone()));
                } else if ctx.catalog.service(&key).is_some() {
                    warn(
                        format!("{field}.name"),
                        format!(
                            "Service {key} is not served by a waypoint (label \
                             istio.io/use-waypoint), and {ZTUNNEL}: this target has no effect"
                        ),
                    );
                } else {
                    warn(
                        format!("{field}.name"),
                        format!("there is no Service {key}: this target has no effect"),
                    );
                }
            }
            kind => warn(
                format!("{field}.kind"),
                format!(
                    "{kind} ({group}) is not a target the mesh reads (a waypoint Gateway, \
                     group gateway.networking.k8s.io, or a Service): this target has no effect"
                ),
            ),
        }
    }
    out
}

/// Whether a `match.mode` leaves out the server side, where the waypoint reports.
fn client_only(mode: Option<&str>) -> bool {
    mode == Some("CLIENT")
}

const CLIENT_ONLY: &str = "the waypoint reports the server side of requests (mode SERVER or \
                           CLIENT_AND_SERVER): this entry has no effect";

fn tracing(
    t: &TracingEntry,
    mesh: &MeshSettings,
    warn: &mut impl FnMut(String, String),
) -> Option<TracingSettings> {
    let at = "spec.tracing[0]";
    if client_only(t.match_.as_ref().and_then(|m| m.mode.as_deref())) {
        warn(format!("{at}.match.mode"), CLIENT_ONLY.into());
        return None;
    }
    let provider = t.providers.first().map(|p| {
        let field = format!("{at}.providers[0].name");
        match mesh.providers.get(&p.name) {
            Some(Declared::Otlp(_)) => Provider::Named(p.name.clone()),
            Some(Declared::Unusable(why)) => {
                warn(field, format!("{why}: tracing is off where this applies"));
                Provider::Unusable
            }
            None => {
                warn(
                    field,
                    format!(
                        "{:?} names no extension provider of the mesh config (ConfigMap istio, \
                         key mesh, extensionProviders): tracing is off where this applies",
                        p.name
                    ),
                );
                Provider::Unusable
            }
        }
    });
    for i in 1..t.providers.len() {
        warn(
            format!("{at}.providers[{i}]"),
            "only the first provider is used".into(),
        );
    }
    let sampling = match t.random_sampling_percentage {
        Some(p) if !(0.0..=100.0).contains(&p) => {
            warn(
                format!("{at}.randomSamplingPercentage"),
                format!("{p} is not a percentage (0 to 100): the inherited one applies"),
            );
            None
        }
        other => other,
    };
    if t.use_request_id_for_trace_sampling.is_some() {
        warn(
            format!("{at}.useRequestIdForTraceSampling"),
            "not acted on: the waypoint samples by trace id, once per trace".into(),
        );
    }
    let custom_tags = t
        .custom_tags
        .iter()
        .filter_map(|(name, spec)| {
            custom_tag(name, spec)
                .map_err(|why| warn(format!("{at}.customTags[{name}]"), why))
                .ok()
        })
        .collect();
    Some(TracingSettings {
        provider,
        sampling,
        disable_span_reporting: t.disable_span_reporting,
        custom_tags,
    })
}

fn custom_tag(name: &str, spec: &CustomTagSpec) -> Result<CustomTag, String> {
    let from = |v: &crate::model::telemetry::NamedValue, what: &str| {
        if v.name.is_empty() {
            return Err(format!("the {what} has no name: this tag is left out"));
        }
        Ok(ValueFrom {
            name: v.name.clone(),
            default_value: v.default_value.clone().unwrap_or_default(),
        })
    };
    let source = match (&spec.literal, &spec.header, &spec.environment) {
        (Some(l), None, None) => custom_tag::Source::Literal(l.value.clone()),
        (None, Some(h), None) => custom_tag::Source::Header(from(h, "header")?),
        (None, None, Some(e)) => custom_tag::Source::Environment(from(e, "environment variable")?),
        _ => {
            return Err(
                "give exactly one of literal, header and environment: this tag is left out".into(),
            );
        }
    };
    Ok(CustomTag {
        tag: name.to_string(),
        source: Some(source),
    })
}

fn access_logging(a: &AccessLoggingEntry, warn: &mut impl FnMut(String, String)) -> Option<bool> {
    let at = "spec.accessLogging[0]";
    if client_only(a.match_.as_ref().and_then(|m| m.mode.as_deref())) {
        warn(format!("{at}.match.mode"), CLIENT_ONLY.into());
        return None;
    }
    if a.filter.is_some() {
        warn(
            format!("{at}.filter"),
            "filters are not supported: every request is logged unless disabled".into(),
        );
    }
    for (i, p) in a
        .providers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name != "envoy")
    {
        warn(
            format!("{at}.providers[{i}].name"),
            format!(
                "{:?} is not acted on: access log lines go to the waypoint's standard output",
                p.name
            ),
        );
    }
    a.disabled
}

fn metrics(
    j: usize,
    entry: &MetricsEntry,
    out: &mut Vec<MetricOverride>,
    warn: &mut impl FnMut(String, String),
) {
    let at = format!("spec.metrics[{j}]");
    for (i, p) in entry
        .providers
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name != "prometheus")
    {
        warn(
            format!("{at}.providers[{i}].name"),
            format!(
                "{:?} is not acted on: metrics are served on the proxies' /metrics endpoint",
                p.name
            ),
        );
    }
    if entry.reporting_interval.is_some() {
        warn(
            format!("{at}.reportingInterval"),
            "not acted on: metrics are read when scraped".into(),
        );
    }
    for (i, o) in entry.overrides.iter().enumerate() {
        let field = format!("{at}.overrides[{i}]");
        match metric_override(o, &field, warn) {
            Ok(Some(converted)) => out.push(converted),
            Ok(None) => {}
            Err((field, why)) => warn(field, format!("{why}: this override is skipped")),
        }
    }
}

/// One override; `Ok(None)` when it changes nothing; `Err((field, why))` when it is skipped.
fn metric_override(
    o: &MetricsOverride,
    at: &str,
    warn: &mut impl FnMut(String, String),
) -> Result<Option<MetricOverride>, (String, String)> {
    let selector = o.match_.clone().unwrap_or_default();
    if selector.custom_metric.is_some() {
        return Err((
            format!("{at}.match.customMetric"),
            "custom metrics are not supported".into(),
        ));
    }
    if client_only(selector.mode.as_deref()) {
        return Err((
            format!("{at}.match.mode"),
            "the waypoint reports the server side of requests".into(),
        ));
    }
    let metric = selector.metric.as_deref().unwrap_or("ALL_METRICS");
    if TCP_METRICS.contains(&metric) {
        return Err((
            format!("{at}.match.metric"),
            format!("{metric} is reported by ztunnel, and {ZTUNNEL}"),
        ));
    }
    if GRPC_MESSAGE_METRICS.contains(&metric) {
        return Err((
            format!("{at}.match.metric"),
            format!("the waypoint does not record {metric}: this override has no effect"),
        ));
    }
    if !REQUEST_METRICS.contains(&metric) {
        return Err((
            format!("{at}.match.metric"),
            format!("{metric:?} is not one of Istio's standard metrics"),
        ));
    }
    let mut converted = MetricOverride {
        metric: metric.to_string(),
        disabled: o.disabled.unwrap_or(false),
        ..MetricOverride::default()
    };
    for (tag, change) in &o.tag_overrides {
        let field = format!("{at}.tagOverrides[{tag}]");
        match change.operation.as_deref().unwrap_or("UPSERT") {
            "REMOVE" => converted.remove_tags.push(tag.clone()),
            "UPSERT" => match change.value.as_deref().map(string_literal) {
                Some(Some(value)) => converted.upsert_tags.push(Header {
                    name: tag.clone(),
                    value,
                }),
                Some(None) => warn(
                    format!("{field}.value"),
                    format!(
                        "{:?} is a CEL expression; only a quoted string literal (\"'canary'\") \
                         is supported: this tag is left as it is",
                        change.value.as_deref().unwrap_or_default()
                    ),
                ),
                None => warn(
                    format!("{field}.value"),
                    "UPSERT needs a value: this tag is left as it is".into(),
                ),
            },
            other => warn(
                format!("{field}.operation"),
                format!("{other:?} is not REMOVE or UPSERT: this tag is left as it is"),
            ),
        }
    }
    let changes = converted.disabled
        || !converted.remove_tags.is_empty()
        || !converted.upsert_tags.is_empty();
    Ok(changes.then_some(converted))
}

/// The string of a CEL string literal (`'canary'` or `"canary"`), the only expression the
/// waypoint evaluates; `None` for any other expression.
pub(crate) fn string_literal(expression: &str) -> Option<String> {
    let text = expression.trim();
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    let plain = !inner.contains(quote) && !inner.contains('\\');
    (text.len() >= 2 && plain).then(|| inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::string_literal;

    #[test]
    fn only_quoted_literals_are_values() {
        assert_eq!(string_literal("'canary'").as_deref(), Some("canary"));
        assert_eq!(string_literal("\"canary\"").as_deref(), Some("canary"));
        assert_eq!(string_literal(" '' ").as_deref(), Some(""));
        assert_eq!(string_literal("request.host"), None);
        assert_eq!(string_literal("'a' + 'b'"), None);
        assert_eq!(string_literal("'"), None);
        assert_eq!(string_literal("'it\\'s'"), None);
    }
}
