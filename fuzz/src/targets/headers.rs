//! The headers a proxy reads from a peer's request: `forwarded` (hbone's RFC 7239 `for`
//! parser, trusted by ztunnel when a waypoint connects) and W3C `traceparent` with
//! `x-request-id` (the waypoint's request identity).
//!
//! The input is up to three lines: the `forwarded` value, the `traceparent` value, the
//! `x-request-id` value. Oracles: a client read from `forwarded` survives a round trip
//! through the header the proxy writes; the `traceparent` the waypoint leaves is always valid
//! version 00, and continues the incoming trace exactly when that one was valid.
//!
//! `baggage` is only ever written (ztunnel's outbound metadata), never parsed, so it has no
//! parser to fuzz.

use http::{HeaderMap, HeaderValue};

use crate::mutate::Shape;
use crate::target::Target;

/// `forwarded`, `traceparent` and `x-request-id` values.
pub const CONNECT_HEADERS: Target = Target {
    name: "connect_headers",
    run: connect_headers,
    shape: Shape::Text,
    dictionary: &[
        b"for=",
        b"for=\"[fd00::7]:80\"",
        b"for=unknown",
        b";by=10.0.0.1",
        b", ",
        b"proto=http",
        b"[::ffff:10.0.0.1]",
        b":65535",
        b"00-",
        b"ff-",
        b"-01",
        b"4bf92f3577b34da6a3ce929d0e0e4736",
        b"00000000000000000000000000000000",
        b"00f067aa0ba902b7",
        b"0000000000000000",
    ],
    max_len: 1024,
};

/// Parses the three header values of `data`.
pub fn connect_headers(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let mut headers = HeaderMap::new();
    for name in ["forwarded", "traceparent", "x-request-id"] {
        if let Some(Ok(value)) = lines.next().map(HeaderValue::from_bytes) {
            headers.insert(name, value);
        }
    }
    check_forwarded(&headers);
    check_identity(headers);
}

fn check_forwarded(headers: &HeaderMap) {
    let Some(client) = hbone::forwarded::client(headers) else {
        return;
    };
    let mut written = HeaderMap::new();
    let value = hbone::forwarded::header_value(client);
    written.insert(
        "forwarded",
        HeaderValue::from_str(&value).expect("the proxy writes a valid header value"),
    );
    assert_eq!(
        hbone::forwarded::client(&written),
        Some(client),
        "{value} does not read back"
    );
}

fn check_identity(mut headers: HeaderMap) {
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(valid_trace)
        .map(|(trace, flags)| (trace.to_owned(), flags.to_owned()));
    let trace_id = waypoint::engine::identify_request(&mut headers);
    let outgoing = headers
        .get("traceparent")
        .expect("a traceparent is always set")
        .to_str()
        .expect("the traceparent is ASCII");
    assert_eq!(outgoing.len(), 55, "not version 00: {outgoing}");
    let (trace, flags) = valid_trace(outgoing).expect("the waypoint writes a valid traceparent");
    assert!(outgoing.starts_with("00-"), "{outgoing}");
    assert_eq!(trace, trace_id, "the logged trace id differs");
    if let Some((in_trace, in_flags)) = incoming {
        assert_eq!(trace, in_trace, "the caller's trace is not continued");
        let sampled = |f: &str| u8::from_str_radix(f, 16).is_ok_and(|f| f & 1 == 1);
        assert_eq!(
            sampled(flags),
            sampled(&in_flags),
            "the caller's decision changed"
        );
    }
    let id = headers.get("x-request-id").expect("x-request-id is set");
    assert!(!id.is_empty());
}

/// The trace id and flags of `value` if it is a valid `traceparent` (W3C Trace Context,
/// level 1: version 00 has exactly four fields; a later version may add more after `-`).
fn valid_trace(value: &str) -> Option<(&str, &str)> {
    let value = value.trim_matches([' ', '\t']);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let version = value.get(..2)?;
    let (trace, parent, flags) = (value.get(3..35)?, value.get(36..52)?, value.get(53..55)?);
    let dashes = [2, 35, 52].iter().all(|&i| value.as_bytes()[i] == b'-');
    let rest = &value[55..];
    let tail_ok = if version == "00" {
        rest.is_empty()
    } else {
        rest.is_empty() || rest.starts_with('-')
    };
    let ok = hex(version, 2)
        && version != "ff"
        && dashes
        && tail_ok
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2);
    ok.then_some((trace, flags))
}
