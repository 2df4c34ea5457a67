//! Answers the waypoint gives itself, with their status, Envoy response flag and details, and
//! their gRPC form (a trailers-only answer) for gRPC requests.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::authz::Denied;
use super::body::{self, Body};
use super::downstream::Fault;

/// Why the waypoint answered a request itself.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    /// The target is not a service this waypoint serves.
    #[error("no service at the original destination")]
    UnknownService,
    /// Authorization denied it.
    #[error("{0}")]
    Denied(Denied),
    /// The service's token bucket is empty.
    #[error("rate limited")]
    RateLimited,
    /// No route matched.
    #[error("no route matched")]
    NoRoute,
    /// A destination names a subset its policy does not define.
    #[error("unknown subset {0}")]
    NoCluster(String),
    /// Every endpoint is gone or ejected.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// Connection-pool limits refused it.
    #[error("upstream overflow")]
    Overflow,
    /// The endpoint could not be reached.
    #[error("upstream connect error: {0}")]
    ConnectFailure(String),
    /// The exchange broke.
    #[error("upstream reset: {0}")]
    Reset(String),
    /// The last attempt's per-try timeout expired.
    #[error("upstream per-try timeout")]
    PerTryTimeout,
    /// The route's timeout expired.
    #[error("upstream request timeout")]
    Timeout,
    /// A gRPC caller's deadline (`grpc-timeout`), shorter than the route's timeout, expired:
    /// the route timeout it stands for, answered with DEADLINE_EXCEEDED.
    #[error("upstream request timeout (the caller's grpc-timeout)")]
    DeadlineExceeded,
    /// The client broke its own request: malformed, abandoned or too slow.
    #[error("downstream fault: {0:?}")]
    Downstream(Fault),
}

/// gRPC's DEADLINE_EXCEEDED status code.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// HTTP status of the answer to a client that went away: nginx's "client closed request".
/// It rarely reaches anyone; telemetry records 0, as Envoy does when no response was sent.
pub(crate) const CLIENT_CLOSED: u16 = 499;

impl RequestError {
    /// HTTP status of the answer.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RequestError::UnknownService
            | RequestError::NoRoute
            | RequestError::Denied(Denied::NoRoute(_)) => StatusCode::NOT_FOUND,
            RequestError::Denied(_) => StatusCode::FORBIDDEN,
            RequestError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RequestError::NoCluster(_)
            | RequestError::NoHealthyUpstream
            | RequestError::Overflow
            | RequestError::ConnectFailure(_)
            | RequestError::Reset(_) => StatusCode::SERVICE_UNAVAILABLE,
            RequestError::PerTryTimeout
            | RequestError::Timeout
            | RequestError::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            RequestError::Downstream(Fault::Malformed) => StatusCode::BAD_REQUEST,
            RequestError::Downstream(Fault::Timeout) => StatusCode::REQUEST_TIMEOUT,
            RequestError::Downstream(Fault::Disconnected) => {
                StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// The response code telemetry records: 0 when no answer can reach the client.
    pub(crate) fn recorded_status(&self) -> u16 {
        match self {
            RequestError::Downstream(Fault::Disconnected) => 0,
            other => other.status().as_u16(),
        }
    }

    /// Envoy's response flag ("" for none).
    pub(crate) fn flag(&self) -> &'static str {
        match self {
            RequestError::UnknownService
            | RequestError::NoRoute
            | RequestError::Denied(Denied::NoRoute(_)) => "NR",
            RequestError::Denied(_) => "",
            RequestError::RateLimited => "RL",
            RequestError::NoCluster(_) => "NC",
            RequestError::NoHealthyUpstream => "UH",
            RequestError::Overflow => "UO",
            RequestError::ConnectFailure(_) => "UF",
            RequestError::Reset(_) => "UR",
            RequestError::PerTryTimeout
            | RequestError::Timeout
            | RequestError::DeadlineExceeded => "UT",
            RequestError::Downstream(fault) => fault.flag(),
        }
    }

    /// Envoy's response code details.
    pub(crate) fn details(&self) -> &'static str {
        match self {
            RequestError::UnknownService => "service_not_served",
            RequestError::Denied(Denied::NoRoute(_)) => "route_not_found",
            RequestError::Denied(_) => "rbac_access_denied",
            RequestError::RateLimited => "local_rate_limited",
            RequestError::NoRoute => "route_not_found",
            RequestError::NoCluster(_) => "cluster_not_found",
            RequestError::NoHealthyUpstream => "no_healthy_upstream",
            RequestError::Overflow => "upstream_overflow",
            RequestError::ConnectFailure(_) => {
                "upstream_reset_before_response_started{connection_failure}"
            }
            RequestError::Reset(_) => "upstream_reset_before_response_started{remote_reset}",
            RequestError::PerTryTimeout => "upstream_per_try_timeout",
            RequestError::Timeout | RequestError::DeadlineExceeded => "upstream_response_timeout",
            RequestError::Downstream(Fault::Malformed) => "codec_error",
            RequestError::Downstream(Fault::Disconnected) => "downstream_remote_disconnect",
            RequestError::Downstream(Fault::Timeout) => "request_overall_timeout",
        }
    }

    /// Body of the answer, worded as Envoy words it.
    fn body(&self) -> &'static str {
        match self {
            RequestError::UnknownService
            | RequestError::NoRoute
            | RequestError::Denied(Denied::NoRoute(_)) => "",
            RequestError::Denied(_) => "RBAC: access denied",
            RequestError::RateLimited => "local_rate_limited",
            RequestError::NoCluster(_) => "",
            RequestError::NoHealthyUpstream => "no healthy upstream",
            RequestError::Overflow => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            RequestError::ConnectFailure(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            RequestError::Reset(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
            }
            RequestError::PerTryTimeout
            | RequestError::Timeout
            | RequestError::DeadlineExceeded => "upstream request timeout",
            RequestError::Downstream(Fault::Malformed) => "Bad Request",
            RequestError::Downstream(Fault::Disconnected) => "",
            RequestError::Downstream(Fault::Timeout) => "request timeout",
        }
    }

    /// The answer.
    pub(crate) fn response(&self, grpc: bool) -> Response<Body> {
        let mut headers = HeaderMap::new();
        if matches!(self, RequestError::RateLimited) {
            // Envoy's local rate limit marks its answers; `x-local-rate-limit` is the header
            // Istio's documented local rate limit configuration adds.
            headers.insert("x-envoy-ratelimited", HeaderValue::from_static("true"));
            headers.insert("x-local-rate-limit", HeaderValue::from_static("true"));
        }
        if grpc && matches!(self, RequestError::DeadlineExceeded) {
            return grpc_local(GRPC_DEADLINE_EXCEEDED, self.body(), headers);
        }
        let mut response = local(self.status(), self.body(), headers, grpc);
        if matches!(self, RequestError::Downstream(Fault::Disconnected)) {
            // Not a registered status: without a phrase of its own HTTP/1.1 would say
            // `<none>` to a client that only half-closed and still reads.
            response
                .extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(
                    b"Client Closed Request",
                ));
        }
        response
    }
}

/// The gRPC status Envoy maps an HTTP status to.
pub(crate) fn grpc_status_of(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

/// A local answer; for gRPC requests a trailers-only answer (HTTP 200, `grpc-status`).
pub(crate) fn local(
    status: StatusCode,
    text: &'static str,
    mut headers: HeaderMap,
    grpc: bool,
) -> Response<Body> {
    if grpc {
        return grpc_local(grpc_status_of(status), text, headers);
    }
    if !text.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    let mut resp = Response::new(if text.is_empty() {
        body::empty()
    } else {
        body::full(text)
    });
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// A trailers-only gRPC answer.
pub(crate) fn grpc_local(
    grpc_status: u32,
    message: &str,
    mut headers: HeaderMap,
) -> Response<Body> {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(grpc_status));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message))
        && !message.is_empty()
    {
        headers.insert("grpc-message", v);
    }
    let mut resp = Response::new(body::empty());
    *resp.headers_mut() = headers;
    resp
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_flags_and_grpc_form() {
        let e = RequestError::Denied(Denied::NotAllowed);
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        let r = e.response(true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(r.headers()["grpc-message"], "RBAC: access denied");
        let miss = RequestError::Denied(Denied::NoRoute("shop/server".into()));
        assert_eq!(
            (miss.status(), miss.flag(), miss.details()),
            (StatusCode::NOT_FOUND, "NR", "route_not_found")
        );
        let r = RequestError::RateLimited.response(false);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["x-envoy-ratelimited"], "true");
        assert_eq!(RequestError::Overflow.flag(), "UO");
        assert_eq!(RequestError::Timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(percent_encode("a%b\n"), "a%25b%0A");
        let malformed = RequestError::Downstream(Fault::Malformed);
        assert_eq!(
            (malformed.status(), malformed.flag()),
            (StatusCode::BAD_REQUEST, "DPE")
        );
        let gone = RequestError::Downstream(Fault::Disconnected);
        assert_eq!((gone.recorded_status(), gone.flag()), (0, "DC"));
        assert_eq!(gone.response(false).status().as_u16(), CLIENT_CLOSED);
        let slow = RequestError::Downstream(Fault::Timeout);
        assert_eq!(
            (slow.status(), slow.flag()),
            (StatusCode::REQUEST_TIMEOUT, "")
        );
    }
}
