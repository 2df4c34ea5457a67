//! The HBONE server: accepts mTLS connections, serves HTTP/2, and hands each `CONNECT` to a
//! handler that answers it before any byte flows.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::frames::{FrameGuard, FrameLimits};
use crate::identity::Identity;
use crate::limits::{Limit, LimitCounters, PeerLimiter, ServerLimits};
use crate::settings;
use crate::stream::TunnelStream;
use crate::tls::peer_identity;

/// A `CONNECT` waiting for its answer.
///
/// The handler must [`accept`](IncomingConnect::accept) or [`reject`](IncomingConnect::reject)
/// it; dropping it unanswered answers 503, so a peer is never left hanging.
#[derive(Debug)]
pub struct IncomingConnect {
    /// The requested destination (`:authority`).
    pub authority: SocketAddr,
    /// The request headers (`forwarded`, `baggage`, `traceparent`, ...).
    pub headers: HeaderMap,
    /// The client's verified identity.
    pub peer_identity: Identity,
    /// The client's TCP address.
    pub peer_addr: SocketAddr,
    /// The local address the connection arrived on.
    pub local_addr: SocketAddr,
    respond: Option<SendResponse<Bytes>>,
    body: Option<RecvStream>,
}

impl IncomingConnect {
    /// Answers 200 and returns the tunnel's byte stream.
    pub fn accept(mut self) -> Result<TunnelStream, Error> {
        let (Some(mut respond), Some(body)) = (self.respond.take(), self.body.take()) else {
            return Err(Error::Unavailable(
                self.peer_addr,
                "already answered".into(),
            ));
        };
        let send = respond.send_response(status_response(StatusCode::OK), false)?;
        Ok(TunnelStream::new(send, body, None))
    }

    /// Refuses the tunnel: 400 for a bad request, 401 when authorization denies it, 503 when
    /// the destination cannot be reached.
    pub fn reject(mut self, status: StatusCode) {
        if let Some(mut respond) = self.respond.take() {
            let _ = respond.send_response(status_response(status), true);
        }
    }
}

impl Drop for IncomingConnect {
    fn drop(&mut self) {
        if let Some(mut respond) = self.respond.take() {
            let _ = respond.send_response(status_response(StatusCode::SERVICE_UNAVAILABLE), true);
        }
    }
}

fn status_response(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

/// Decides what happens to each `CONNECT`.
pub trait ConnectHandler: Send + Sync + 'static {
    /// Handles one tunnel request; runs in its own task for the life of the tunnel.
    fn handle(&self, connect: IncomingConnect) -> impl Future<Output = ()> + Send;
}

/// What became of the connections when the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that finished their streams within the deadline.
    pub drained: usize,
    /// Connections cut at the deadline.
    pub aborted: usize,
}

/// An HBONE server. Its TLS configuration can be replaced at any time (certificate
/// rotation); connections already established keep theirs.
pub struct Server<H> {
    tls: watch::Receiver<Arc<ServerConfig>>,
    shared: Arc<Shared<H>>,
    drain_deadline: Duration,
}

/// What every connection of a server needs.
struct Shared<H> {
    handler: H,
    limits: ServerLimits,
    counters: Arc<LimitCounters>,
}

/// Replaces the TLS configuration of a running [`Server`].
#[derive(Debug, Clone)]
pub struct TlsUpdater(Arc<watch::Sender<Arc<ServerConfig>>>);

impl TlsUpdater {
    /// Uses `config` for every connection accepted from now on.
    pub fn update(&self, config: Arc<ServerConfig>) {
        self.0.send_replace(config);
    }
}

impl<H: ConnectHandler> Server<H> {
    /// A server presenting `tls` and sending every `CONNECT` to `handler`, with the default
    /// [`ServerLimits`]. In-flight streams get `drain_deadline` to finish once shutdown starts.
    pub fn new(tls: Arc<ServerConfig>, handler: H, drain_deadline: Duration) -> (Self, TlsUpdater) {
        Self::with_limits(
            tls,
            handler,
            drain_deadline,
            ServerLimits::default(),
            LimitCounters::new(),
        )
    }

    /// As [`Server::new`], putting `limits` on every peer and counting the connections they
    /// end in `counters`.
    pub fn with_limits(
        tls: Arc<ServerConfig>,
        handler: H,
        drain_deadline: Duration,
        limits: ServerLimits,
        counters: Arc<LimitCounters>,
    ) -> (Self, TlsUpdater) {
        let (tx, rx) = watch::channel(tls);
        let server = Self {
            tls: rx,
            shared: Arc::new(Shared {
                handler,
                limits,
                counters,
            }),
            drain_deadline,
        };
        (server, TlsUpdater(Arc::new(tx)))
    }

    /// Serves `listener` until `shutdown` completes, then drains: stops accepting, sends
    /// GOAWAY on every connection, lets in-flight streams finish up to the drain deadline
    /// and cuts what remains.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> DrainReport {
        let (drain_tx, drain_rx) = watch::channel(false);
        let peers = PeerLimiter::new(self.shared.limits.max_connections_per_peer);
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let Some(slot) = peers.try_acquire(peer.ip()) else {
                            // Closed before any handshake: one address cannot hold them all.
                            self.shared.counters.record(Limit::PerPeerLimit);
                            debug!(%peer, "HBONE connection refused: per-peer limit");
                            continue;
                        };
                        let tls = self.tls.borrow().clone();
                        let shared = self.shared.clone();
                        let drain = drain_rx.clone();
                        connections.spawn(async move {
                            let ended = serve_connection(tcp, peer, tls, &shared, drain).await;
                            drop(slot);
                            if let Some(limit) = ended {
                                shared.counters.record(limit);
                                debug!(%peer, %limit, "HBONE connection closed by a limit");
                            }
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE: back off rather than spin.
                        warn!(error = %e, "HBONE accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        let _ = drain_tx.send(true);
        let pending = connections.len();
        info!(connections = pending, "HBONE server draining");
        let mut drained = 0;
        let deadline = tokio::time::sleep(self.drain_deadline);
        tokio::pin!(deadline);
        while !connections.is_empty() {
            tokio::select! {
                _ = connections.join_next() => drained += 1,
                () = &mut deadline => break,
            }
        }
        let aborted = connections.len();
        connections.shutdown().await;
        DrainReport {
            drained: drained.min(pending),
            aborted,
        }
    }
}

/// Who is on the other end of a connection.
struct PeerInfo {
    identity: Identity,
    addr: SocketAddr,
    local_addr: SocketAddr,
}

/// Serves one TCP connection: TLS, then HTTP/2 streams until the peer leaves, we drain, or
/// a limit ends it (returned).
async fn serve_connection<H: ConnectHandler>(
    tcp: TcpStream,
    peer_addr: SocketAddr,
    tls: Arc<ServerConfig>,
    shared: &Arc<Shared<H>>,
    drain: watch::Receiver<bool>,
) -> Option<Limit> {
    let limits = &shared.limits;
    let _ = tcp.set_nodelay(true);
    let local_addr = tcp.local_addr().ok()?;
    let handshake = TlsAcceptor::from(tls).accept(tcp);
    let tls_stream = match tokio::time::timeout(limits.tls_handshake_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(peer = %peer_addr, error = %e, "HBONE TLS handshake failed");
            return None;
        }
        Err(_) => return Some(Limit::TlsHandshakeTimeout),
    };
    let Some(identity) = peer_identity(tls_stream.get_ref().1.peer_certificates()) else {
        debug!(peer = %peer_addr, "HBONE peer without identity");
        return None;
    };
    let peer = PeerInfo {
        identity,
        addr: peer_addr,
        local_addr,
    };
    serve_h2_guarded(tls_stream, peer, shared, drain).await
}

/// Serves HTTP/2 on an authenticated stream, under the frame guard and the server's limits;
/// returns the limit that ended the connection, if one did.
async fn serve_h2_guarded<T, H>(
    io: T,
    peer: PeerInfo,
    shared: &Arc<Shared<H>>,
    drain: watch::Receiver<bool>,
) -> Option<Limit>
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: ConnectHandler,
{
    let limits = &shared.limits;
    let guarded = FrameGuard::new(
        io,
        FrameLimits {
            handshake_timeout: limits.http2_handshake_timeout,
            header_block_timeout: limits.header_block_timeout,
            max_header_block_bytes: limits.max_header_block_bytes(),
        },
    );
    let tripped = guarded.tripped();
    let connection = match server_builder(limits).handshake(guarded).await {
        Ok(c) => c,
        Err(e) => {
            debug!(peer = %peer.addr, error = %e, "HTTP/2 handshake failed");
            return tripped.get();
        }
    };
    let ended = serve_streams(connection, Arc::new(peer), shared, drain).await;
    // The guard's verdict first: its failed reads surface as I/O errors.
    tripped.get().or(match ended {
        Ended::Idle => Some(Limit::Idle),
        Ended::Error(e) if e.is_go_away() && e.is_library() => {
            (e.reason() == Some(Reason::ENHANCE_YOUR_CALM)).then_some(Limit::Http2Abuse)
        }
        Ended::Closed | Ended::Error(_) => None,
    })
}

/// Serves HTTP/2 on an authenticated byte stream, with the default limits: each stream's
/// request is checked to be a `CONNECT` to `ip:port` and handed to `handler`, until the peer
/// leaves or `drain` turns true.
///
/// Public only so the request parsing can be fuzzed over an in-memory stream; the server
/// calls the same code once TLS has named the peer.
#[doc(hidden)]
pub async fn serve_h2<T, H>(
    io: T,
    peer_identity: Identity,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    handler: H,
    drain: watch::Receiver<bool>,
) where
    T: AsyncRead + AsyncWrite + Unpin,
    H: ConnectHandler,
{
    let shared = Arc::new(Shared {
        handler,
        limits: ServerLimits::default(),
        counters: LimitCounters::new(),
    });
    let peer = PeerInfo {
        identity: peer_identity,
        addr: peer_addr,
        local_addr,
    };
    serve_h2_guarded(io, peer, &shared, drain).await;
}

/// How a connection's HTTP/2 life ended.
enum Ended {
    /// The peer went away, or we drained.
    Closed,
    /// No stream for the idle timeout (after GOAWAY, by itself or cut).
    Idle,
    /// An HTTP/2 or I/O error.
    Error(h2::Error),
}

/// Accepts streams, each handled in its own task, until the connection ends. A connection
/// without streams for the idle timeout gets GOAWAY; still without streams a grace period
/// later, it is cut.
async fn serve_streams<T, H>(
    mut connection: h2::server::Connection<FrameGuard<T>, Bytes>,
    peer: Arc<PeerInfo>,
    shared: &Arc<Shared<H>>,
    mut drain: watch::Receiver<bool>,
) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin,
    H: ConnectHandler,
{
    let limits = &shared.limits;
    let mut streams = JoinSet::new();
    let mut draining = false;
    let mut idle_goaway = false;
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let ended = loop {
        tokio::select! {
            changed = drain.changed(), if !draining => {
                // A closed channel means the server is gone: drain as well.
                let _ = changed;
                draining = true;
                connection.graceful_shutdown();
            }
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    if let Some(connect) = parse_connect(request, respond, &peer) {
                        let shared = shared.clone();
                        streams.spawn(async move { shared.handler.handle(connect).await });
                    }
                }
                // After an idle GOAWAY, the peer leaving (politely or not) is what we asked.
                _ if idle_goaway => break Ended::Idle,
                Some(Err(e)) => {
                    debug!(peer = %peer.addr, error = %e, "HBONE connection error");
                    break Ended::Error(e);
                }
                None => break Ended::Closed,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    let wait = if idle_goaway { limits.idle_close_grace() } else { limits.idle_timeout };
                    idle.as_mut().reset(Instant::now() + wait);
                }
            }
            () = &mut idle, if streams.is_empty() => {
                if idle_goaway {
                    break Ended::Idle;
                }
                idle_goaway = true;
                connection.graceful_shutdown();
                idle.as_mut().reset(Instant::now() + limits.idle_close_grace());
            }
        }
    };
    // The connection has ended; tunnels still running have lost their transport.
    streams.shutdown().await;
    ended
}

/// Checks the request is a well-formed `CONNECT` to `ip:port`; anything else is answered 400
/// here and never reaches the handler.
fn parse_connect(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: &PeerInfo,
) -> Option<IncomingConnect> {
    let authority = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    let authority = match (request.method(), authority) {
        (&Method::CONNECT, Some(authority)) => authority,
        (method, _) => {
            debug!(peer = %peer.addr, %method, uri = %request.uri(), "rejecting non-CONNECT or bad authority");
            let _ = respond.send_response(status_response(StatusCode::BAD_REQUEST), true);
            return None;
        }
    };
    let (parts, body) = request.into_parts();
    Some(IncomingConnect {
        authority,
        headers: parts.headers,
        peer_identity: peer.identity.clone(),
        peer_addr: peer.addr,
        local_addr: peer.local_addr,
        respond: Some(respond),
        body: Some(body),
    })
}

/// Applies the HBONE settings and a server's `limits` to an HTTP/2 server builder.
fn server_builder(limits: &ServerLimits) -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(settings::STREAM_WINDOW)
        .initial_connection_window_size(settings::CONNECTION_WINDOW)
        .max_frame_size(settings::MAX_FRAME_SIZE)
        .max_header_list_size(limits.max_header_list_size)
        .max_send_buffer_size(settings::MAX_SEND_BUFFER)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(limits.max_local_error_reset_streams));
    builder
}
