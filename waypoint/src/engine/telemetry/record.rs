//! What is recorded about one finished request, for its metrics and its access log line.
//! Request attributes share the request's own buffers rather than copying them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use proxy_core::tap::TapEvent;

use super::super::trace::{Incoming, RequestTrace};
use super::labels::RequestLabels;
use super::routes::RouteTelemetry;

/// The authority a request named: its URI's (HTTP/2, absolute form) or its `Host` header's.
#[derive(Debug, Clone, Default)]
pub(crate) enum Authority {
    /// Neither.
    #[default]
    None,
    /// From the URI.
    Uri(http::uri::Authority),
    /// From `Host`.
    Host(HeaderValue),
}

impl Authority {
    /// The authority of a request, shared with it rather than copied.
    pub(crate) fn of(parts: &http::request::Parts) -> Self {
        if let Some(a) = parts.uri.authority() {
            return Authority::Uri(a.clone());
        }
        parts
            .headers
            .get(http::header::HOST)
            .map_or(Authority::None, |h| Authority::Host(h.clone()))
    }

    /// As text ("" when absent or not text).
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Authority::None => "",
            Authority::Uri(a) => a.as_str(),
            Authority::Host(h) => h.to_str().unwrap_or(""),
        }
    }
}

/// A W3C trace id, as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TraceId(Option<[u8; 32]>);

impl TraceId {
    /// The id spelled by `hex` (32 lowercase hex digits; anything else is no id).
    pub(crate) fn from_hex(hex: &[u8]) -> Self {
        let valid = hex.len() == 32 && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        TraceId(valid.then(|| <[u8; 32]>::try_from(hex).ok()).flatten())
    }

    /// The hex digits ("" when there is no id).
    pub(crate) fn as_str(&self) -> &str {
        self.0
            .as_ref()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// One finished request. Request attributes share the request's own buffers (header
/// values, URI parts) instead of copying them.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestRecord {
    /// Metric labels.
    pub labels: RequestLabels,
    /// Request method.
    pub method: http::Method,
    /// Authority as received.
    pub authority: Authority,
    /// Path and query as received.
    pub path: Option<http::uri::PathAndQuery>,
    /// Client IP.
    pub source: Option<IpAddr>,
    /// Endpoint of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// The route that took the request (the service's default route when none matched);
    /// `None` when no service did.
    pub route: Option<Arc<RouteTelemetry>>,
    /// `x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// W3C trace id.
    pub trace_id: TraceId,
    /// The trace context the request arrived with.
    pub incoming_trace: Incoming,
    /// Its trace, when its service is traced.
    pub trace: Option<Box<RequestTrace>>,
    /// Its service's access log is off.
    pub access_log_disabled: bool,
    /// Why the waypoint answered itself, Envoy style ("route_not_found", ...).
    pub details: &'static str,
    /// Arrival to the end of the response.
    pub duration: Duration,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes.
    pub response_bytes: u64,
}

impl RequestRecord {
    /// The name of the matched route ("" when none matched).
    pub(crate) fn route_name(&self) -> &str {
        self.route.as_ref().map_or("", |r| &r.name)
    }

    /// The request as `meshctl tap` shows it: no bodies, no header values.
    pub(crate) fn tap_event(&self) -> TapEvent {
        let l = &self.labels;
        TapEvent {
            kind: proxy_core::tap::REQUEST,
            method: self.method.as_str().to_owned(),
            authority: self.authority.as_str().to_owned(),
            path: self.path.as_ref().map_or("", |p| p.as_str()).to_owned(),
            status: l.response_code,
            latency_ms: self.duration.as_secs_f64() * 1000.0,
            route: self.route_name().to_owned(),
            source_identity: l.source.principal.to_string(),
            source_workload: l.source.workload.to_string(),
            source_namespace: l.source.namespace.to_string(),
            destination_service: l.service.name.to_string(),
            destination_workload: l.destination.workload.to_string(),
            destination_namespace: l.destination.namespace.to_string(),
            upstream: self.upstream.map(|u| u.to_string()).unwrap_or_default(),
            response_flags: l.response_flags.clone(),
            ..TapEvent::default()
        }
    }
}
