//! What `http-echo` answers: the reply body, per-request overrides from the
//! query string, and the embedding of an upstream call's result.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::Reply;
use super::error::AppError;
use super::identity::Identity;

/// Longest latency a `?latency_ms=` override may ask for, so one query
/// cannot pin a connection for ever.
pub const MAX_LATENCY_OVERRIDE: Duration = Duration::from_secs(60);

/// Headers copied from the incoming request to the upstream call, so traces
/// and user-based routing follow the request through a chain of echoes: the
/// headers Istio asks applications to forward (W3C trace context, B3 single and
/// multi header, the request id), plus `baggage` and `end-user`.
pub const PROPAGATED_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "baggage",
    "x-request-id",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "end-user",
];

/// The JSON body of every `http-echo` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EchoReply {
    /// Name of the pod that answered.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
    /// Its `VERSION` (empty when unset).
    pub version: String,
    /// Request method.
    pub method: String,
    /// Request path including the query.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub protocol: String,
    /// Request headers; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The peer address the server saw, `ip:port`.
    pub client: String,
    /// The upstream's reply, when `--upstream` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Value>,
}

impl EchoReply {
    /// Describes `request` as received from `client` by `identity`.
    pub fn new(identity: &Identity, request: &http::request::Parts, client: SocketAddr) -> Self {
        EchoReply {
            pod: identity.pod.clone(),
            namespace: identity.namespace.clone(),
            version: identity.version.clone(),
            method: request.method.to_string(),
            path: request
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            protocol: format!("{:?}", request.version),
            headers: header_map(&request.headers),
            client: client.to_string(),
            upstream: None,
        }
    }
}

/// The body of `GET /_echo/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoStats {
    /// Echo requests served since start (stats requests excluded).
    pub requests: u64,
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    map
}

/// Per-request behaviour asked for in the query string.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Overrides {
    /// `?status=CODE`: answer with this status.
    pub status: Option<StatusCode>,
    /// `?latency_ms=N`: wait this long instead of `--latency-ms`.
    pub latency: Option<Duration>,
}

impl Overrides {
    /// Reads `status` and `latency_ms` from a query; other keys are ignored.
    /// A malformed value is an error so a typo is not silently ignored.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut overrides = Overrides::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "status" => {
                    let code = value.parse::<u16>().ok();
                    let status = code.and_then(|c| StatusCode::from_u16(c).ok());
                    overrides.status = Some(status.ok_or(format!("invalid status {value:?}"))?);
                }
                "latency_ms" => {
                    let ms = value
                        .parse::<u64>()
                        .map_err(|_| format!("invalid latency_ms {value:?}"))?;
                    overrides.latency = Some(Duration::from_millis(ms).min(MAX_LATENCY_OVERRIDE));
                }
                _ => {}
            }
        }
        Ok(overrides)
    }
}

/// Turns the upstream call's outcome into the `"upstream"` value, and says
/// whether it succeeded (a 2xx reply).
///
/// A JSON body is embedded as JSON, anything else as a string; a failed call
/// becomes `{"error": "..."}`, and a non-2xx reply `{"status": N, "body": ...}`.
pub fn embed_upstream(result: Result<Reply, AppError>) -> (Value, bool) {
    match result {
        Ok(reply) => {
            let body = serde_json::from_slice(&reply.body).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&reply.body).into_owned())
            });
            if reply.status.is_success() {
                (body, true)
            } else {
                let value = serde_json::json!({ "status": reply.status.as_u16(), "body": body });
                (value, false)
            }
        }
        Err(e) => (serde_json::json!({ "error": e.to_string() }), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Version;

    #[test]
    fn describes_a_request() {
        let (mut parts, ()) = http::Request::builder()
            .method("PUT")
            .uri("/a?b=c")
            .header("x-one", "1")
            .header("x-two", "a")
            .header("x-two", "b")
            .body(())
            .unwrap()
            .into_parts();
        parts.version = Version::HTTP_2;
        let id = Identity {
            pod: "p".into(),
            namespace: "n".into(),
            version: "v2".into(),
        };
        let reply = EchoReply::new(&id, &parts, "10.0.0.1:1234".parse().unwrap());
        assert_eq!(reply.method, "PUT");
        assert_eq!(reply.path, "/a?b=c");
        assert_eq!(reply.protocol, "HTTP/2.0");
        assert_eq!(reply.headers["x-two"], "a, b");
        assert_eq!(reply.client, "10.0.0.1:1234");
        let json = serde_json::to_value(&reply).unwrap();
        assert!(json.get("upstream").is_none());
        assert_eq!(json["version"], "v2");
    }

    #[test]
    fn parses_overrides() {
        assert_eq!(Overrides::parse(None), Ok(Overrides::default()));
        let o = Overrides::parse(Some("x=1&status=503&latency_ms=100&flag")).unwrap();
        assert_eq!(o.status, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(o.latency, Some(Duration::from_millis(100)));
        let o = Overrides::parse(Some("latency_ms=99999999")).unwrap();
        assert_eq!(o.latency, Some(MAX_LATENCY_OVERRIDE));
        assert!(Overrides::parse(Some("status=abc")).is_err());
        assert!(Overrides::parse(Some("status=1000")).is_err());
        assert!(Overrides::parse(Some("latency_ms=-1")).is_err());
    }

    fn reply(status: u16, body: &'static str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn embeds_upstream_results() {
        let (v, ok) = embed_upstream(Ok(reply(200, r#"{"pod":"b"}"#)));
        assert!(ok);
        assert_eq!(v["pod"], "b");

        let (v, ok) = embed_upstream(Ok(reply(200, "plain")));
        assert!(ok);
        assert_eq!(v, "plain");

        let (v, ok) = embed_upstream(Ok(reply(503, r#"{"pod":"b"}"#)));
        assert!(!ok);
        assert_eq!(v["status"], 503);
        assert_eq!(v["body"]["pod"], "b");

        let (v, ok) = embed_upstream(Err(AppError::Timeout(5)));
        assert!(!ok);
        assert!(v["error"].as_str().unwrap().contains("timed out"));
    }
}
