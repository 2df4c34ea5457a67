//! What every hop changes regardless of config: connection-specific headers are dropped
//! (RFC 9110 §7.6.1; HTTP/2 forbids them, RFC 9113 §8.2.2), and the request target takes the
//! form the upstream protocol wants (origin form plus `Host` for HTTP/1.1, absolute form for
//! HTTP/2).

use http::header::{CONNECTION, HOST, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Uri, Version};

use crate::engine::upgrade_protocol;

/// Headers that describe one connection, never the message, besides `Connection`,
/// `Transfer-Encoding`, `Upgrade` and `TE` (the set Envoy removes).
const HOP_BY_HOP: [HeaderName; 2] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is one of the fixed connection-specific headers (including `Connection`,
/// which may name others).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [CONNECTION, TRANSFER_ENCODING, UPGRADE, TE].contains(name) || HOP_BY_HOP.contains(name)
}

/// Removes the connection-specific headers of `headers`: the fixed hop-by-hop set, and every
/// header the `Connection` header names. `TE: trailers` is kept (gRPC needs it end to end).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Runs on every request and response, most of which carry none: one look over the
    // names is cheaper than a lookup per name to remove.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(CONNECTION);
    headers.remove(TRANSFER_ENCODING);
    headers.remove(UPGRADE);
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// [`strip_hop_by_hop`], except that an upgrade (`Connection: upgrade` with `Upgrade`) stays:
/// for an upgrade request sent on, and a 101 answering it. Whatever else `Connection` named
/// goes.
pub fn strip_keeping_upgrade(headers: &mut HeaderMap) {
    let protocol = upgrade_protocol(headers).and_then(|p| HeaderValue::from_str(p).ok());
    strip_hop_by_hop(headers);
    if let Some(protocol) = protocol {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

/// Prepares `request` for an upstream speaking `version`: hop-by-hop headers removed (an
/// upgrade kept over HTTP/1.1), the target in the form that protocol uses, and the version set.
pub fn for_upstream<B>(request: &mut Request<B>, version: Version) {
    if version == Version::HTTP_11 {
        strip_keeping_upgrade(request.headers_mut());
    } else {
        strip_hop_by_hop(request.headers_mut());
    }
    let authority = request
        .uri()
        .authority()
        .cloned()
        .or_else(|| host_authority(request.headers()));
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if version == Version::HTTP_2 {
        // :authority replaces Host (RFC 9113 §8.3.1).
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(request.uri().scheme().cloned().unwrap_or(Scheme::HTTP));
        parts.authority = authority;
        parts.path_and_query = Some(path);
        if parts.authority.is_some()
            && let Ok(uri) = Uri::from_parts(parts)
        {
            *request.uri_mut() = uri;
            request.headers_mut().remove(HOST);
        }
    } else {
        if !request.headers().contains_key(HOST)
            && let Some(value) = authority
                .as_ref()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            request.headers_mut().insert(HOST, value);
        }
        *request.uri_mut() = Uri::from(path);
    }
    *request.version_mut() = version;
}

/// The authority named by the `Host` header.
fn host_authority(headers: &HeaderMap) -> Option<Authority> {
    headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_te_trailers_stays() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(TE, HeaderValue::from_static("gzip, trailers"));
        headers.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers[TE], "trailers");
        assert_eq!(headers["x-end-to-end"], "kept");

        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn http2_requests_become_http1_with_host() {
        let mut request = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://orders.shop:8080/items?id=3")
            .body(())
            .unwrap();
        for_upstream(&mut request, Version::HTTP_11);
        assert_eq!(request.uri(), "/items?id=3");
        assert_eq!(request.headers()[HOST], "orders.shop:8080");
        assert_eq!(request.version(), Version::HTTP_11);
    }

    #[test]
    fn http1_requests_become_absolute_for_http2() {
        let mut request = Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .header(HOST, "orders.shop")
            .header(TE, "trailers")
            .body(())
            .unwrap();
        for_upstream(&mut request, Version::HTTP_2);
        assert_eq!(
            request.uri(),
            "http://orders.shop/grpc.health.v1.Health/Check"
        );
        assert!(!request.headers().contains_key(HOST));
        assert_eq!(request.headers()[TE], "trailers");
        assert_eq!(request.version(), Version::HTTP_2);
    }

    /// A measurement, not a check: `cargo test --release -p waypoint --lib
    /// cost_of_stripping -- --ignored --nocapture` prints the time per call on the headers
    /// of a typical request, which carry nothing to strip (it runs three times a request).
    #[test]
    #[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
    fn cost_of_stripping() {
        let mut typical = HeaderMap::new();
        for (name, value) in [
            ("host", "reviews.shop.svc.cluster.local:9080"),
            ("user-agent", "load/1.0"),
            ("accept", "*/*"),
            ("x-request-id", "0b0e7e9e-3c1f-4c36-9d44-5b8f8a4c1d2e"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("content-length", "0"),
        ] {
            typical.insert(name, HeaderValue::from_static(value));
        }
        let n = 2_000_000u32;
        let started = std::time::Instant::now();
        for _ in 0..n {
            strip_hop_by_hop(std::hint::black_box(&mut typical));
        }
        let per = started.elapsed().as_nanos() as f64 / f64::from(n);
        assert_eq!(typical.len(), 6);
        eprintln!("strip_hop_by_hop: {per:.1} ns per call");
    }

    #[test]
    fn upgrades_survive_the_hop_only_over_http1() {
        let upgrade = || {
            Request::get("/chat")
                .header(HOST, "chat.shop")
                .header(CONNECTION, "keep-alive, Upgrade, x-hop")
                .header(UPGRADE, "websocket")
                .header("x-hop", "1")
                .body(())
                .unwrap()
        };
        let mut request = upgrade();
        for_upstream(&mut request, Version::HTTP_11);
        let headers = request.headers();
        assert_eq!(headers[CONNECTION], "upgrade");
        assert_eq!(headers[UPGRADE], "websocket");
        assert!(!headers.contains_key("x-hop"));
        let mut request = upgrade();
        for_upstream(&mut request, Version::HTTP_2);
        assert!(!request.headers().contains_key(UPGRADE));
        assert!(!request.headers().contains_key(CONNECTION));
    }

    #[test]
    fn http1_keeps_an_existing_host() {
        let mut request = Request::builder()
            .uri("/")
            .header(HOST, "a.example")
            .body(())
            .unwrap();
        for_upstream(&mut request, Version::HTTP_11);
        assert_eq!(request.uri(), "/");
        assert_eq!(request.headers()[HOST], "a.example");
    }
}
