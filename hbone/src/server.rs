//! The HBONE server: accepts mTLS connections, serves HTTP/2, and hands each `CONNECT` to a
//! handler that answers it before any byte flows.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::identity::Identity;
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
    handler: Arc<H>,
    drain_deadline: Duration,
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
    /// A server presenting `tls` and sending every `CONNECT` to `handler`. In-flight streams
    /// get `drain_deadline` to finish once shutdown starts.
    pub fn new(tls: Arc<ServerConfig>, handler: H, drain_deadline: Duration) -> (Self, TlsUpdater) {
        let (tx, rx) = watch::channel(tls);
        let server = Self {
            tls: rx,
            handler: Arc::new(handler),
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
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let tls = self.tls.borrow().clone();
                        let handler = self.handler.clone();
                        let drain = drain_rx.clone();
                        connections.spawn(serve_connection(tcp, peer, tls, handler, drain));
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

/// Serves one TCP connection: TLS, then HTTP/2 streams until the peer leaves or we drain.
async fn serve_connection<H: ConnectHandler>(
    tcp: TcpStream,
    peer_addr: SocketAddr,
    tls: Arc<ServerConfig>,
    handler: Arc<H>,
    drain: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let local_addr = match tcp.local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let handshake = TlsAcceptor::from(tls).accept(tcp);
    let tls_stream = match tokio::time::timeout(settings::HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            debug!(peer = %peer_addr, error = %e, "HBONE TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(peer = %peer_addr, "HBONE TLS handshake timed out");
            return;
        }
    };
    let Some(peer_identity) = peer_identity(tls_stream.get_ref().1.peer_certificates()) else {
        debug!(peer = %peer_addr, "HBONE peer without identity");
        return;
    };
    serve_h2(
        tls_stream,
        peer_identity,
        peer_addr,
        local_addr,
        handler,
        drain,
    )
    .await;
}

/// Serves HTTP/2 on an authenticated connection: each stream's request is checked to be a
/// `CONNECT` to `ip:port` and handed to `handler`, until the peer leaves or `drain` turns
/// true.
///
/// Public only so the request parsing can be fuzzed over an in-memory stream; the server
/// calls it once TLS has named the peer.
#[doc(hidden)]
pub async fn serve_h2<T, H>(
    io: T,
    peer_identity: Identity,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    handler: Arc<H>,
    mut drain: watch::Receiver<bool>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    H: ConnectHandler,
{
    let mut connection = match settings::server_builder().handshake(io).await {
        Ok(c) => c,
        Err(e) => {
            debug!(peer = %peer_addr, error = %e, "HTTP/2 handshake failed");
            return;
        }
    };
    let mut streams = JoinSet::new();
    let mut draining = false;
    loop {
        tokio::select! {
            changed = drain.changed(), if !draining => {
                // A closed channel means the server is gone: drain as well.
                let _ = changed;
                draining = true;
                connection.graceful_shutdown();
            }
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    let connect = match parse_connect(request, respond, &peer_identity, peer_addr, local_addr) {
                        Some(connect) => connect,
                        None => continue,
                    };
                    let handler = handler.clone();
                    streams.spawn(async move { handler.handle(connect).await });
                }
                Some(Err(e)) => {
                    debug!(peer = %peer_addr, error = %e, "HBONE connection error");
                    break;
                }
                None => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // The connection has ended; tunnels still running have lost their transport.
    streams.shutdown().await;
}

/// Checks the request is a well-formed `CONNECT` to `ip:port`; anything else is answered 400
/// here and never reaches the handler.
fn parse_connect(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer_identity: &Identity,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
) -> Option<IncomingConnect> {
    let authority = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    let authority = match (request.method(), authority) {
        (&Method::CONNECT, Some(authority)) => authority,
        (method, _) => {
            debug!(peer = %peer_addr, %method, uri = %request.uri(), "rejecting non-CONNECT or bad authority");
            let _ = respond.send_response(status_response(StatusCode::BAD_REQUEST), true);
            return None;
        }
    };
    let (parts, body) = request.into_parts();
    Some(IncomingConnect {
        authority,
        headers: parts.headers,
        peer_identity: peer_identity.clone(),
        peer_addr,
        local_addr,
        respond: Some(respond),
        body: Some(body),
    })
}
