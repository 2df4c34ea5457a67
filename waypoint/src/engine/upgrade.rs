//! Protocol upgrades (HTTP/1.1 `Upgrade`, e.g. WebSocket) as the engine sees them: an upgrade
//! request is an ordinary request for authorization, routing, faults and telemetry; it is
//! never mirrored, and a retry can only happen before an answer (a 101 is never retried).
//! Once the upstream answers 101, the transport relays the bytes and reports them here, so
//! the request's record (written when the relay ends) counts them as Envoy counts an
//! upgraded stream's bytes: as request and response body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;
use http::header::{CONNECTION, UPGRADE};

/// The protocol an HTTP/1.1 upgrade request asks for: its `Upgrade` header, when its
/// `Connection` header names `upgrade` (RFC 9110 §7.8). `None` for every other request.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<&str> {
    let protocol = headers.get(UPGRADE)?.to_str().ok()?.trim();
    let named = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (named && !protocol.is_empty()).then_some(protocol)
}

/// The bytes relayed after a 101, added to the request's record before it is written. The
/// engine puts one in the extensions of every 101 response it returns.
#[derive(Clone, Debug, Default)]
pub struct UpgradedBytes {
    /// The request's byte count (its body so far), shared with its record.
    pub(crate) request: Arc<AtomicU64>,
    /// Bytes added to the response's body count.
    pub(crate) response: Arc<AtomicU64>,
}

impl UpgradedBytes {
    /// Counts `sent` bytes from the client to the upstream and `received` back.
    pub fn add(&self, sent: u64, received: u64) {
        self.request.fetch_add(sent, Ordering::Relaxed);
        self.response.fetch_add(received, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(connection: &str, upgrade: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_str(connection).unwrap());
        if let Some(u) = upgrade {
            h.insert(UPGRADE, HeaderValue::from_str(u).unwrap());
        }
        h
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let h = headers("keep-alive, Upgrade", Some("websocket"));
        assert_eq!(upgrade_protocol(&h), Some("websocket"));
        assert_eq!(
            upgrade_protocol(&headers("keep-alive", Some("websocket"))),
            None
        );
        assert_eq!(upgrade_protocol(&headers("upgrade", None)), None);
        assert_eq!(upgrade_protocol(&headers("upgrade", Some(" "))), None);
        assert_eq!(upgrade_protocol(&HeaderMap::new()), None);
    }

    #[test]
    fn relayed_bytes_add_up() {
        let bytes = UpgradedBytes::default();
        bytes.add(3, 5);
        bytes.add(1, 1);
        assert_eq!(bytes.request.load(Ordering::Relaxed), 4);
        assert_eq!(bytes.response.load(Ordering::Relaxed), 6);
    }
}
