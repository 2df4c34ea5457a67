//! Protocol upgrades through the waypoint: HTTP/1.1 `Upgrade` (WebSocket and others) and
//! HTTP/2 extended CONNECT (RFC 8441), relayed as bytes once the upstream switches.
//!
//! On the way in, an HTTP/2 extended CONNECT is rewritten into the HTTP/1.1 upgrade request it
//! stands for (`GET`, `Connection: upgrade`, `Upgrade: <:protocol>`; a WebSocket key when the
//! client, as RFC 8441 has it, sent none), as Envoy does, so the engine authorizes, routes and
//! records one form. `Upgrade: h2c` is refused by ignoring it (RFC 9113 §3.1 deprecates it):
//! the request is served as plain HTTP/1.1. Upstream, an upgrade always goes as HTTP/1.1 on a
//! connection of its own, never pooled. A 101 from the upstream is answered 101 (HTTP/1.1
//! client) or 200 (HTTP/2 client), and both upgraded streams are spliced until both sides have
//! closed (half-closes passed on) or nothing moved for the idle timeout. Any other answer is an
//! ordinary response and nothing is upgraded.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http::header::{CONNECTION, HeaderName, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use proxy_core::connections::relay_until;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::hop;
use super::io::BoxedIo;
use super::serving::ActiveRequest;
use crate::engine::{Body, BoxError, UpgradedBytes, UpstreamError, upgrade_protocol};

/// The header a WebSocket client proves its handshake with (RFC 6455 §4.1).
const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
/// The server's answer to it; an HTTP/2 WebSocket handshake has none (RFC 8441 §5).
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
/// The settings an `h2c` upgrade carries (RFC 7540 §3.2.1).
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// A client's request to switch protocols, held until the upstream answers.
pub struct ClientUpgrade {
    /// Resolves to the client's stream once the answer is sent.
    on_upgrade: OnUpgrade,
    /// The client asked with HTTP/2 extended CONNECT (answered 200, not 101).
    http2: bool,
}

/// Takes the upgrade out of an incoming request, if it asks for one, leaving the request in
/// HTTP/1.1 upgrade form for the engine. An `h2c` upgrade is removed from the request (which
/// is then served as it is) and yields `None`.
pub fn accept(request: &mut Request<Incoming>) -> Option<ClientUpgrade> {
    if request.method() == Method::CONNECT {
        return accept_extended_connect(request);
    }
    refuse_h2c(request.headers_mut());
    upgrade_protocol(request.headers())?;
    Some(ClientUpgrade {
        on_upgrade: hyper::upgrade::on(request),
        http2: false,
    })
}

/// An HTTP/2 CONNECT with `:protocol` (RFC 8441 §4), rewritten as the HTTP/1.1 upgrade it
/// stands for. A CONNECT without `:protocol` is left alone.
fn accept_extended_connect(request: &mut Request<Incoming>) -> Option<ClientUpgrade> {
    let protocol = request
        .extensions()
        .get::<hyper::ext::Protocol>()
        .and_then(|p| HeaderValue::from_str(p.as_str()).ok())?;
    let on_upgrade = hyper::upgrade::on(&mut *request);
    let websocket = protocol.as_bytes().eq_ignore_ascii_case(b"websocket");
    *request.method_mut() = Method::GET;
    *request.version_mut() = Version::HTTP_11;
    let headers = request.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
    if websocket && !headers.contains_key(SEC_WEBSOCKET_KEY) {
        headers.insert(SEC_WEBSOCKET_KEY, websocket_key());
    }
    Some(ClientUpgrade {
        on_upgrade,
        http2: true,
    })
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
fn websocket_key() -> HeaderValue {
    let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&key).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Removes `h2c` from a request's `Upgrade` (and its `HTTP2-Settings`), keeping any other
/// protocol it offers.
pub fn refuse_h2c(headers: &mut http::HeaderMap) {
    let Some(offered) = headers.get(UPGRADE).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if !offered
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("h2c"))
    {
        return;
    }
    let rest: Vec<&str> = offered
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("h2c"))
        .collect();
    match HeaderValue::from_str(&rest.join(", ")) {
        Ok(value) if !rest.is_empty() => {
            headers.insert(UPGRADE, value);
        }
        _ => {
            headers.remove(UPGRADE);
        }
    }
    headers.remove(HTTP2_SETTINGS);
}

impl ClientUpgrade {
    /// Answers the client's upgrade with `response`, the engine's answer. A 101 switches: the
    /// response gets the client's form (101 with the upgrade headers, or 200 for HTTP/2), and
    /// a task relays both streams, holding `active` and the response body (which writes the
    /// request's record) until it ends. Any other answer is left as it is.
    pub fn answer(
        self,
        response: &mut Response<Body>,
        idle_timeout: Duration,
        active: ActiveRequest,
    ) {
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return;
        }
        hop::strip_keeping_upgrade(response.headers_mut());
        if self.http2 {
            *response.status_mut() = StatusCode::OK;
            let headers = response.headers_mut();
            for name in [CONNECTION, UPGRADE, SEC_WEBSOCKET_ACCEPT] {
                headers.remove(name);
            }
        }
        let upstream = hyper::upgrade::on(&mut *response);
        let bytes = response.extensions().get::<UpgradedBytes>().cloned();
        let empty = http_body_util::Empty::new().map_err(|e| match e {}).boxed();
        let record = std::mem::replace(response.body_mut(), empty);
        let client = self.on_upgrade;
        tokio::spawn(async move {
            let _active = active;
            let (client, server) = match tokio::try_join!(client, upstream) {
                Ok(both) => both,
                Err(e) => {
                    // Dropped unfinished, the record is flagged as the client's leaving.
                    tracing::debug!(error = %e, "upgrade abandoned before both sides switched");
                    return;
                }
            };
            let (sent, received) =
                splice(TokioIo::new(client), TokioIo::new(server), idle_timeout).await;
            if let Some(bytes) = bytes {
                bytes.add(sent, received);
            }
            // The 101's own body is empty: reading it to its end writes the record.
            let _ = record.collect().await;
        });
    }
}

/// Sends an upgrade request on a connection of its own over `io` (never pooled: once
/// upgraded, it carries the other protocol). A 101 response carries the upstream's upgraded
/// stream in its extensions (see [`hyper::upgrade::on`]).
pub async fn send(
    io: BoxedIo,
    request: Request<Body>,
    max_header_bytes: usize,
) -> Result<Response<Body>, UpstreamError> {
    let (mut sender, connection) = http1::Builder::new()
        .max_buf_size(max_header_bytes.max(8192))
        .handshake::<_, Body>(TokioIo::new(io))
        .await
        .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream upgrade connection ended");
        }
    });
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        hop::strip_keeping_upgrade(response.headers_mut());
    } else {
        hop::strip_hop_by_hop(response.headers_mut());
    }
    Ok(response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed()))
}

/// Relays both ways between `client` and `server` (proxy-core's relay) until both directions
/// are done (each end of stream passed on as a shutdown), one fails, or nothing moved either
/// way for `idle_timeout`. Returns the bytes read from the client and written to it.
pub async fn splice<C, S>(client: C, server: S, idle_timeout: Duration) -> (u64, u64)
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let meter = Arc::new(Meter::new());
    let client = Metered {
        io: client,
        meter: meter.clone(),
    };
    let copied = relay_until(client, server, meter.idle_for(idle_timeout)).await;
    if let Some(e) = &copied.error {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
    if copied.stopped.is_some() {
        tracing::debug!(?idle_timeout, "upgraded connection closed: idle");
    }
    (copied.sent, copied.received)
}

/// When anything last moved on the client's side of a relay.
struct Meter {
    started: Instant,
    /// Milliseconds from `started` to the last byte moved.
    last: AtomicU64,
}

impl Meter {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `period`.
    async fn idle_for(&self, period: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let quiet = last.elapsed();
            if quiet >= period {
                return;
            }
            tokio::time::sleep(period - quiet).await;
        }
    }
}

/// The client's stream, noting when anything moves through it.
struct Metered<I> {
    io: I,
    meter: Arc<Meter>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Metered<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.meter.touch();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Metered<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.meter.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn h2c_is_dropped_and_other_protocols_kept() {
        let mut h = http::HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(HTTP2_SETTINGS, HeaderValue::from_static("AAMAAABkAAQAAP__"));
        h.insert(
            CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        refuse_h2c(&mut h);
        assert!(!h.contains_key(UPGRADE) && !h.contains_key(HTTP2_SETTINGS));
        assert_eq!(upgrade_protocol(&h), None);

        let mut h = http::HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("H2C, websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        refuse_h2c(&mut h);
        assert_eq!(upgrade_protocol(&h), Some("websocket"));

        let mut h = http::HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        refuse_h2c(&mut h);
        assert_eq!(h[UPGRADE], "websocket");
    }

    #[test]
    fn websocket_keys_are_sixteen_bytes_in_base64() {
        let key = websocket_key();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .unwrap();
        assert_eq!(decoded.len(), 16);
        assert_ne!(key, websocket_key());
    }

    #[tokio::test]
    async fn splice_passes_half_closes_on_and_counts_both_ways() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (server, mut server_peer) = tokio::io::duplex(64);
        let relay = tokio::spawn(splice(client, server, Duration::from_secs(3600)));
        client_peer.write_all(b"ping").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ping");
        // The client's half-close leaves the other direction open.
        server_peer.write_all(b"pong!").await.unwrap();
        server_peer.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_peer.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        assert_eq!(relay.await.unwrap(), (4, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn splice_ends_when_nothing_moves_for_the_idle_timeout() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (server, _server_peer) = tokio::io::duplex(64);
        let relay = tokio::spawn(splice(client, server, Duration::from_secs(30)));
        client_peer.write_all(b"hi").await.unwrap();
        let (sent, received) = relay.await.unwrap();
        assert_eq!((sent, received), (2, 0));
        // The relay dropped its ends: the client sees the end of the stream.
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
