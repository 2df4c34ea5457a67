//! Tracing settings compiled from the config: the collectors spans go to
//! ([`Provider`], by name) and what each service's requests do ([`TracingSpec`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::waypoint as pb;
use http::{HeaderName, HeaderValue};

use super::super::compile::ConfigError;

/// Istio's default cut-off for span attribute values.
const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// Deadline of one export call when the provider sets none.
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// An OTLP collector: a mesh service and port, and how spans are sent there.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Provider {
    /// The provider's name.
    pub name: String,
    /// The collector service's hostname.
    pub service: String,
    /// Its namespace.
    pub namespace: String,
    /// Its service port.
    pub port: u16,
    /// Attribute values are cut to this many bytes.
    pub max_tag_length: usize,
    /// OTLP/HTTP to this path; OTLP/gRPC when `None`.
    pub http_path: Option<String>,
    /// Deadline of one export call.
    pub timeout: Duration,
    /// Sent with every export call (gRPC: initial metadata).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The providers of a config, by name.
pub(crate) type Providers = HashMap<String, Arc<Provider>>;

/// Compiles the config's providers.
pub(crate) fn providers(list: &[pb::TracingProvider]) -> Result<Providers, ConfigError> {
    let mut out = Providers::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let field = format!("tracing_providers[{i}] ({})", p.name);
        let port = u16::try_from(p.port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| ConfigError(format!("{field}.port: {} out of range", p.port)))?;
        if p.service.is_empty() || p.namespace.is_empty() {
            return Err(ConfigError(format!(
                "{field}: service and namespace are required"
            )));
        }
        let mut headers = Vec::with_capacity(p.headers.len());
        for (name, value) in &p.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(value).ok())
                .ok_or_else(|| ConfigError(format!("{field}.headers: {name:?} is not a header")))?;
            headers.push(header);
        }
        let provider = Provider {
            name: p.name.clone(),
            service: p.service.clone(),
            namespace: p.namespace.clone(),
            port,
            max_tag_length: match p.max_tag_length {
                0 => DEFAULT_MAX_TAG_LENGTH,
                n => n as usize,
            },
            http_path: match p.http_path.as_str() {
                "" => None,
                path if path.starts_with('/') => Some(path.to_owned()),
                path => {
                    return Err(ConfigError(format!(
                        "{field}.http_path: {path:?} does not start with /"
                    )));
                }
            },
            timeout: match p.timeout_ms {
                0 => DEFAULT_EXPORT_TIMEOUT,
                ms => Duration::from_millis(u64::from(ms)),
            },
            headers,
        };
        if out.insert(p.name.clone(), Arc::new(provider)).is_some() {
            return Err(ConfigError(format!("{field}.name: duplicate provider")));
        }
    }
    Ok(out)
}

/// Where a custom tag's value comes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TagValue {
    /// A fixed value (literals, and environment variables, read when the config compiles).
    Fixed(String),
    /// A request header, with a value for when it is absent ("": left out).
    Header(HeaderName, String),
}

/// Tracing of one service's requests.
#[derive(Debug)]
pub(crate) struct TracingSpec {
    /// Where its spans go.
    pub provider: Arc<Provider>,
    /// Percentage of traces started here that are sampled.
    pub percentage: f64,
    /// Attributes added to its spans.
    pub tags: Vec<(String, TagValue)>,
    /// Whether its spans are exported (else only sampled and propagated).
    pub report: bool,
}

impl TracingSpec {
    /// Compiles a service's tracing against the config's providers.
    pub(crate) fn compile(
        t: &pb::Tracing,
        providers: &Providers,
        field: &str,
    ) -> Result<Self, ConfigError> {
        let provider = providers.get(&t.provider).cloned().ok_or_else(|| {
            ConfigError(format!("{field}.provider: no provider {:?}", t.provider))
        })?;
        let percentage = t.random_sampling_percentage;
        if !(0.0..=100.0).contains(&percentage) {
            return Err(ConfigError(format!(
                "{field}.random_sampling_percentage: {percentage} is not within 0..=100"
            )));
        }
        let mut tags = Vec::with_capacity(t.custom_tags.len());
        for (i, tag) in t.custom_tags.iter().enumerate() {
            let at = format!("{field}.custom_tags[{i}] ({})", tag.tag);
            if let Some(value) = tag_value(tag, &at)? {
                tags.push((tag.tag.clone(), value));
            }
        }
        Ok(Self {
            provider,
            percentage,
            tags,
            report: !t.disable_span_reporting,
        })
    }
}

/// A custom tag's source; `None` for an environment variable that is unset without a
/// default (the tag is left out).
fn tag_value(tag: &pb::CustomTag, field: &str) -> Result<Option<TagValue>, ConfigError> {
    use pb::custom_tag::Source;
    Ok(match &tag.source {
        Some(Source::Literal(v)) => Some(TagValue::Fixed(v.clone())),
        Some(Source::Environment(e)) => std::env::var(&e.name)
            .ok()
            .or_else(|| (!e.default_value.is_empty()).then(|| e.default_value.clone()))
            .map(TagValue::Fixed),
        Some(Source::Header(h)) => {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| ConfigError(format!("{field}.header: bad name {:?}", h.name)))?;
            Some(TagValue::Header(name, h.default_value.clone()))
        }
        None => return Err(ConfigError(format!("{field}: no source"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> pb::TracingProvider {
        pb::TracingProvider {
            name: "otel".into(),
            service: "c.o.svc.cluster.local".into(),
            namespace: "o".into(),
            port: 4317,
            ..Default::default()
        }
    }

    #[test]
    fn providers_are_checked() {
        let p = providers(&[provider()]).unwrap();
        assert_eq!(p["otel"].max_tag_length, 256);
        let mut bad = provider();
        bad.port = 70_000;
        let e = providers(&[bad]).unwrap_err().0;
        assert!(e.starts_with("tracing_providers[0] (otel).port"), "{e}");
        assert!(providers(&[provider(), provider()]).is_err());
    }

    #[test]
    fn specs_name_a_known_provider_and_a_sane_percentage() {
        let p = providers(&[provider()]).unwrap();
        let mut t = pb::Tracing {
            provider: "otel".into(),
            random_sampling_percentage: 10.0,
            custom_tags: vec![
                pb::CustomTag {
                    tag: "team".into(),
                    source: Some(pb::custom_tag::Source::Literal("pay".into())),
                },
                pb::CustomTag {
                    tag: "user".into(),
                    source: Some(pb::custom_tag::Source::Header(pb::ValueFrom {
                        name: "x-user".into(),
                        default_value: "anon".into(),
                    })),
                },
                pb::CustomTag {
                    tag: "absent".into(),
                    source: Some(pb::custom_tag::Source::Environment(pb::ValueFrom {
                        name: "WAYPOINT_TEST_SURELY_UNSET".into(),
                        default_value: String::new(),
                    })),
                },
            ],
            disable_span_reporting: false,
        };
        let s = TracingSpec::compile(&t, &p, "s").unwrap();
        assert_eq!(s.tags.len(), 2);
        assert_eq!(s.tags[0], ("team".into(), TagValue::Fixed("pay".into())));
        assert!(s.report);
        t.random_sampling_percentage = 101.0;
        assert!(TracingSpec::compile(&t, &p, "s").is_err());
        t.random_sampling_percentage = 1.0;
        t.provider = "jaeger".into();
        let e = TracingSpec::compile(&t, &p, "s").unwrap_err().0;
        assert_eq!(e, "s.provider: no provider \"jaeger\"");
    }
}
