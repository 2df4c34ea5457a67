//! What a peer may hold on a server, and for how long: handshake and header-block deadlines,
//! idleness, stream and header bounds, HTTP/2 abuse thresholds and per-address connection
//! caps, with counters of the connections each limit ended.
//!
//! The HBONE [`Server`](crate::Server) applies all of them; the waypoint applies the HTTP/2
//! ones (through [`FrameGuard`](crate::frames::FrameGuard)) to the HTTP it serves inside
//! tunnels.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::settings;

/// Bounds a server puts on its peers.
///
/// Defaults follow what Envoy recommends for an edge (handshake and header deadlines of
/// seconds, 100 streams per connection) and stay well clear of what a mesh peer needs: a
/// healthy peer finishes TLS and sends its HTTP/2 preface and SETTINGS within milliseconds,
/// and the HBONE client pool closes its own connections after a minute without tunnels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time from TCP accept to a finished TLS handshake (10 s, as the HBONE client allows
    /// itself for connect plus handshake).
    pub tls_handshake_timeout: Duration,
    /// Time from the end of TLS (or, in clear text, from the first byte) until the peer's
    /// HTTP/2 preface and first SETTINGS frame have arrived (10 s).
    pub http2_handshake_timeout: Duration,
    /// Time a header block may stay open: from a HEADERS frame until the frame carrying
    /// END_HEADERS has fully arrived (10 s; a client sends a block in one go).
    pub header_block_timeout: Duration,
    /// Time a connection may carry no stream before it gets GOAWAY and is closed (5 min:
    /// five times the HBONE pool's own idle close, so well-behaved clients leave first).
    pub idle_timeout: Duration,
    /// Streams a peer may have open at once on one connection (100, Envoy's edge advice).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list a peer may send (16 KiB: a CONNECT's headers are small).
    /// A header block (HEADERS plus CONTINUATIONs) larger than twice this on the wire ends
    /// the connection before it is buffered.
    pub max_header_list_size: u32,
    /// Streams a peer may open and reset before they are accepted (CVE-2023-44487, "rapid
    /// reset"); past it the connection gets GOAWAY ENHANCE_YOUR_CALM (20, h2's default).
    pub max_pending_accept_reset_streams: usize,
    /// Streams we may be made to reset for the peer's protocol errors before the connection
    /// gets GOAWAY ENHANCE_YOUR_CALM (1024, h2's default).
    pub max_local_error_reset_streams: usize,
    /// Connections one source address may hold at once, in any state; more are closed at
    /// accept (256: with 100 streams each, 25 600 tunnels from one pod or waypoint).
    pub max_connections_per_peer: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: settings::HANDSHAKE_TIMEOUT,
            http2_handshake_timeout: Duration::from_secs(10),
            header_block_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_concurrent_streams: settings::MAX_STREAMS_PER_CONNECTION,
            max_header_list_size: settings::MAX_HEADER_LIST_SIZE,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            max_connections_per_peer: 256,
        }
    }
}

impl ServerLimits {
    /// Largest header block accepted on the wire: HPACK output is normally smaller than the
    /// decoded list it carries; the slack covers padding and unlucky Huffman codes.
    pub fn max_header_block_bytes(&self) -> usize {
        (self.max_header_list_size as usize).saturating_mul(2)
    }

    /// How long a connection that got GOAWAY for idleness may take to close by itself
    /// before it is cut (the peer may never answer the GOAWAY's PING).
    pub fn idle_close_grace(&self) -> Duration {
        self.http2_handshake_timeout.min(self.idle_timeout)
    }
}

/// A limit that ended (or refused) a connection: the `reason` label of the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The TLS handshake did not finish in time.
    TlsHandshakeTimeout,
    /// The HTTP/2 preface and first SETTINGS did not arrive in time.
    Http2HandshakeTimeout,
    /// A header block stayed open too long (or, for HTTP/1.1, a request head).
    HeaderTimeout,
    /// A header block grew past its bound.
    HeaderTooLarge,
    /// No stream for the idle timeout.
    Idle,
    /// The HTTP/2 stack sent GOAWAY ENHANCE_YOUR_CALM: rapid resets, too many protocol
    /// errors, a CONTINUATION flood.
    Http2Abuse,
    /// The peer's address already held its maximum of connections (refused at accept).
    PerPeerLimit,
}

impl Limit {
    /// Every limit, in exposition order.
    pub const ALL: [Limit; 7] = [
        Limit::TlsHandshakeTimeout,
        Limit::Http2HandshakeTimeout,
        Limit::HeaderTimeout,
        Limit::HeaderTooLarge,
        Limit::Idle,
        Limit::Http2Abuse,
        Limit::PerPeerLimit,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::TlsHandshakeTimeout => "tls_handshake_timeout",
            Limit::Http2HandshakeTimeout => "http2_handshake_timeout",
            Limit::HeaderTimeout => "header_timeout",
            Limit::HeaderTooLarge => "header_too_large",
            Limit::Idle => "idle",
            Limit::Http2Abuse => "http2_abuse",
            Limit::PerPeerLimit => "per_peer_limit",
        }
    }

    /// Whether the connection was refused at accept rather than closed later.
    pub fn is_refusal(self) -> bool {
        self == Limit::PerPeerLimit
    }

    fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(index: usize) -> Option<Limit> {
        Limit::ALL.get(index).copied()
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many connections each [`Limit`] ended; shared by every server of one listener kind
/// in a proxy and rendered by its metrics registry.
#[derive(Debug, Default)]
pub struct LimitCounters {
    counts: [AtomicU64; Limit::ALL.len()],
}

impl LimitCounters {
    /// Empty counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts one connection ended by `limit`.
    pub fn record(&self, limit: Limit) {
        self.counts[limit.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections ended by `limit` so far.
    pub fn get(&self, limit: Limit) -> u64 {
        self.counts[limit.index()].load(Ordering::Relaxed)
    }
}

/// Live connections per source address, each capped at a maximum. An address is forgotten
/// when its last connection ends, so the map is bounded by the live connections.
#[derive(Debug)]
pub struct PeerLimiter {
    max: usize,
    live: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerLimiter {
    /// A limiter allowing `max` connections per address (at least one).
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            live: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `ip`, held until the returned guard is dropped;
    /// `None` when `ip` is at its maximum.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        // IPv4 peers of a dual-stack listener show up IPv4-mapped: one peer, one count.
        let ip = ip.to_canonical();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let count = live.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Live connections from `ip`.
    pub fn live(&self, ip: IpAddr) -> usize {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// One connection's place in its address's count.
#[derive(Debug)]
pub struct PeerSlot {
    limiter: Arc<PeerLimiter>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut live = self.limiter.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = live.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_capped_per_address_and_forgotten_when_gone() {
        let limiter = PeerLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.try_acquire(a).expect("first");
        let second = limiter.try_acquire(mapped).expect("second, same peer");
        assert!(limiter.try_acquire(a).is_none(), "third from the same peer");
        let other = limiter
            .try_acquire(b)
            .expect("another peer is not affected");
        drop(first);
        let again = limiter.try_acquire(a).expect("a slot freed up");
        drop((second, again, other));
        assert_eq!(limiter.live(a), 0);
        assert!(limiter.live.lock().unwrap().is_empty(), "nothing kept");
    }

    #[test]
    fn counters_and_labels() {
        let counters = LimitCounters::new();
        counters.record(Limit::Idle);
        counters.record(Limit::Idle);
        counters.record(Limit::PerPeerLimit);
        assert_eq!(counters.get(Limit::Idle), 2);
        assert_eq!(counters.get(Limit::HeaderTimeout), 0);
        for (i, limit) in Limit::ALL.iter().enumerate() {
            assert_eq!(Limit::from_index(i), Some(*limit));
        }
        assert!(Limit::PerPeerLimit.is_refusal());
        assert!(!Limit::Idle.is_refusal());
        assert_eq!(
            Limit::Http2HandshakeTimeout.to_string(),
            "http2_handshake_timeout"
        );
    }
}
