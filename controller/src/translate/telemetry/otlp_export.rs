//! How spans reach an OpenTelemetry provider's collector, from the provider's `http` and `grpc`
//! blocks as Istio reads them: OTLP/HTTP to `http.path` when `http` is set, OTLP/gRPC
//! otherwise; the export deadline; the headers (gRPC initial metadata) sent with each call,
//! a value or, as istiod reads `envName`, the controller's own environment variable.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::model::telemetry::{OpenTelemetryProvider, ProviderHeader};

/// The export settings of one provider, as the waypoint's config carries them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Export {
    /// The OTLP/HTTP path; empty for OTLP/gRPC.
    pub http_path: String,
    /// Deadline of one export call, milliseconds; 0 for the waypoint's default.
    pub timeout_ms: u32,
    /// Headers of every call.
    pub headers: BTreeMap<String, String>,
}

/// The export settings of `otel`; `warn(field, message)` for what is not acted on as
/// written (the rest of the provider still applies). `env` reads the controller's
/// environment.
pub(crate) fn export(
    otel: &OpenTelemetryProvider,
    env: impl Fn(&str) -> Option<String>,
    mut warn: impl FnMut(String, String),
) -> Export {
    let mut out = Export::default();
    let (timeout, headers, at) = match (&otel.http, &otel.grpc) {
        (Some(http), grpc) => {
            if grpc.is_some() {
                warn(
                    "grpc".into(),
                    "http is set, so spans go over OTLP/HTTP: the grpc settings are not used"
                        .into(),
                );
            }
            out.http_path = if http.path.is_empty() {
                "/".to_owned()
            } else if http.path.starts_with('/') {
                http.path.clone()
            } else {
                format!("/{}", http.path)
            };
            (&http.timeout, &http.headers, "http")
        }
        (None, Some(grpc)) => (&grpc.timeout, &grpc.initial_metadata, "grpc"),
        (None, None) => return out,
    };
    if let Some(text) = timeout {
        match parse_duration(text).ok().and_then(milliseconds) {
            Some(ms) => out.timeout_ms = ms,
            None => warn(
                format!("{at}.timeout"),
                format!("{text:?} is not a duration: exports keep the default deadline of 5s"),
            ),
        }
    }
    let list = if at == "http" {
        "headers"
    } else {
        "initialMetadata"
    };
    for (i, header) in headers.iter().enumerate() {
        let field = format!("{at}.{list}[{i}]");
        if let Some(value) = header_value(header, &env, |m| warn(field.clone(), m)) {
            out.headers.insert(header.name.to_ascii_lowercase(), value);
        }
    }
    out
}

/// Whole milliseconds of a positive duration that fits the config.
fn milliseconds(d: Duration) -> Option<u32> {
    u32::try_from(d.as_millis()).ok().filter(|ms| *ms > 0)
}

/// The value of `header`, or `None` (warned) when it cannot be sent.
fn header_value(
    header: &ProviderHeader,
    env: &impl Fn(&str) -> Option<String>,
    mut warn: impl FnMut(String),
) -> Option<String> {
    if http::HeaderName::from_bytes(header.name.as_bytes()).is_err() {
        warn(format!(
            "{:?} is not a header name: it is not sent",
            header.name
        ));
        return None;
    }
    let value = match (&header.value, &header.env_name) {
        (Some(value), _) => value.clone(),
        (None, Some(variable)) => match env(variable) {
            Some(value) => value,
            None => {
                warn(format!(
                    "the controller has no environment variable {variable}: the header is sent empty, as istiod sends it"
                ));
                String::new()
            }
        },
        (None, None) => String::new(),
    };
    if http::HeaderValue::from_str(&value).is_err() {
        warn("its value is not a valid header value: it is not sent".to_owned());
        return None;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::telemetry::{OtlpGrpc, OtlpHttp};

    fn header(name: &str, value: Option<&str>, env_name: Option<&str>) -> ProviderHeader {
        ProviderHeader {
            name: name.into(),
            value: value.map(Into::into),
            env_name: env_name.map(Into::into),
        }
    }

    fn run(otel: &OpenTelemetryProvider) -> (Export, Vec<(String, String)>) {
        let mut warnings = Vec::new();
        let env = |name: &str| (name == "OTEL_TOKEN").then(|| "s3cret".to_owned());
        let out = export(otel, env, |f, m| warnings.push((f, m)));
        (out, warnings)
    }

    #[test]
    fn http_sets_the_path_deadline_and_headers() {
        let otel = OpenTelemetryProvider {
            http: Some(OtlpHttp {
                path: "v1/traces".into(),
                timeout: Some("2s".into()),
                headers: vec![
                    header("X-Api-Key", Some("k"), None),
                    header("authorization", None, Some("OTEL_TOKEN")),
                    header("x-missing", None, Some("NOT_SET")),
                    header("bad header", Some("v"), None),
                ],
            }),
            ..OpenTelemetryProvider::default()
        };
        let (out, warnings) = run(&otel);
        assert_eq!(out.http_path, "/v1/traces");
        assert_eq!(out.timeout_ms, 2000);
        let headers: Vec<(&str, &str)> = out
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("authorization", "s3cret"),
                ("x-api-key", "k"),
                ("x-missing", "")
            ]
        );
        let fields: Vec<&str> = warnings.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["http.headers[2]", "http.headers[3]"]);
    }

    #[test]
    fn grpc_keeps_grpc_with_its_metadata_and_a_bad_deadline_is_warned() {
        let otel = OpenTelemetryProvider {
            grpc: Some(OtlpGrpc {
                timeout: Some("soon".into()),
                initial_metadata: vec![header("x-tenant", Some("shop"), None)],
            }),
            ..OpenTelemetryProvider::default()
        };
        let (out, warnings) = run(&otel);
        assert_eq!(out.http_path, "");
        assert_eq!(out.timeout_ms, 0);
        assert_eq!(
            out.headers.get("x-tenant").map(String::as_str),
            Some("shop")
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].0, "grpc.timeout");
        assert_eq!(run(&OpenTelemetryProvider::default()).0, Export::default());
    }
}
