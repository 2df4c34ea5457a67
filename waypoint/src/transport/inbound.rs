//! Each HBONE `CONNECT` the waypoint receives: the original destination is its authority,
//! the caller is the TLS peer's identity and the address in `forwarded` (ztunnel sets it; the
//! TCP peer otherwise). TCP ports go to [`Passthrough`]; anything else is detected and served
//! as HTTP/2 or HTTP/1.1 with hyper, each request handed to the engine in force.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::waypoint::Protocol;
use hbone::{ConnectHandler, IncomingConnect};
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use ztunnel::telemetry::Metrics;

use super::config::ConfigStore;
use super::detect::{self, Detected, Prefixed};
use super::headers::strip_hop_by_hop;
use super::passthrough::Passthrough;
use super::upstream::HboneUpstream;
use crate::engine::{Body, BoxError, Caller, Target, Upstream};

/// Tunables of the inbound side.
#[derive(Clone, Debug)]
pub struct InboundSettings {
    /// How long an undeclared port waits for the client's first bytes before treating the
    /// connection as opaque TCP (server-first protocols send nothing).
    pub detect_timeout: Duration,
    /// How long an HTTP client may take to send a request head (and its first bytes).
    pub header_read_timeout: Duration,
    /// Bound on a request head (HTTP/1.1) or header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per tunnel.
    pub max_concurrent_streams: u32,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            detect_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_concurrent_streams: 100,
        }
    }
}

struct Inner {
    config: Arc<ConfigStore>,
    upstream: Arc<dyn Upstream>,
    passthrough: Passthrough,
    settings: InboundSettings,
    /// Turns true when the waypoint drains: HTTP connections finish what they are doing and
    /// close (HTTP/1.1 after the current response, HTTP/2 with GOAWAY).
    drain: watch::Receiver<bool>,
    /// HTTP/1.1 and HTTP/2 serving with the settings' bounds, configured once.
    http: auto::Builder<TokioExecutor>,
}

/// The HBONE server's handler. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    inner: Arc<Inner>,
}

impl Inbound {
    /// Serves with the engine in `config`, sending through `upstream`, reporting TCP
    /// connections to `metrics`; `drain` turning true closes HTTP connections gracefully.
    pub fn new(
        config: Arc<ConfigStore>,
        upstream: HboneUpstream,
        metrics: Arc<Metrics>,
        settings: InboundSettings,
        drain: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                passthrough: Passthrough::new(upstream.clone(), metrics),
                upstream: Arc::new(upstream),
                http: http_builder(&settings),
                settings,
                drain,
            }),
        }
    }
}

/// The HTTP server settings of every connection.
fn http_builder(settings: &InboundSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.max_concurrent_streams);
    builder
}

impl ConnectHandler for Inbound {
    fn handle(&self, connect: IncomingConnect) -> impl Future<Output = ()> + Send {
        handle(self.inner.clone(), connect)
    }
}

async fn handle(inner: Arc<Inner>, connect: IncomingConnect) {
    let client =
        hbone::forwarded::client(&connect.headers).unwrap_or_else(|| canonical(connect.peer_addr));
    let caller = Caller {
        identity: Some(connect.peer_identity.clone()),
        ip: client.ip(),
    };
    let target = Target {
        address: canonical(connect.authority),
    };
    let engine = inner.config.engine();
    let protocol = engine.port_protocol(&target);
    tracing::debug!(
        peer = %connect.peer_addr, identity = %connect.peer_identity, %client,
        target = %target.address, ?protocol, "tunnel"
    );
    if protocol == Protocol::Tcp {
        inner
            .passthrough
            .tunnel(connect, client, caller, target, &engine)
            .await;
        return;
    }
    let mut tunnel = match connect.accept() {
        Ok(tunnel) => tunnel,
        Err(e) => {
            tracing::debug!(error = %e, "tunnel closed before it was answered");
            return;
        }
    };
    let mut prefix = Vec::new();
    let wait = if protocol == Protocol::Unspecified {
        inner.settings.detect_timeout
    } else {
        inner.settings.header_read_timeout
    };
    let detected = match tokio::time::timeout(wait, detect::detect(&mut tunnel, &mut prefix)).await
    {
        Ok(Ok(detected)) => detected,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "tunnel failed before its first bytes");
            return;
        }
        Err(_) if protocol == Protocol::Unspecified => detect::classify(&prefix),
        Err(_) => {
            tracing::debug!(target = %target.address, "no request within the head timeout");
            return;
        }
    };
    let stream = Prefixed::new(prefix, tunnel);
    match detected {
        Detected::Empty => {}
        Detected::Opaque if protocol == Protocol::Unspecified => {
            inner
                .passthrough
                .stream(stream, client, caller, target, &engine)
                .await;
        }
        // The HTTP server tells HTTP/2's preface from HTTP/1.1 itself; on an HTTP port it
        // answers what is not HTTP with 400.
        Detected::Http2 | Detected::Http1 | Detected::Opaque => {
            serve_http(&inner, stream, caller, target).await;
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 on `stream` until the client closes, or the waypoint drains.
async fn serve_http<S>(inner: &Arc<Inner>, stream: S, caller: Caller, target: Target)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = service(inner.config.clone(), inner.upstream.clone(), caller, target);
    serve_with(&inner.http, inner.drain.clone(), stream, service).await;
}

/// Serves the bytes of an HTTP tunnel (after detection) with the engine in `config`, as
/// [`Inbound`] does with the HTTP settings of `settings`, until the client closes.
///
/// Public only so the HTTP path can be fuzzed without HBONE: it answers from the same
/// builder and service as a tunnel, with `upstream` standing in for the endpoints.
#[doc(hidden)]
pub async fn serve_http_stream<S>(
    config: Arc<ConfigStore>,
    upstream: Arc<dyn Upstream>,
    settings: &InboundSettings,
    stream: S,
    caller: Caller,
    target: Target,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // The sender stays alive for the whole connection: a closed channel would not drain.
    let (_never, drain) = watch::channel(false);
    let service = service(config, upstream, caller, target);
    serve_with(&http_builder(settings), drain, stream, service).await;
}

async fn serve_with<S, F>(
    http: &auto::Builder<TokioExecutor>,
    mut drain: watch::Receiver<bool>,
    stream: S,
    service: impl hyper::service::Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future = F,
    > + Clone
    + Send
    + 'static,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let connection = http.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = draining(&mut drain) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// The hyper service of one connection: each request goes to the engine in force when it
/// arrives, and its answer goes back in the protocol of the request.
fn service(
    config: Arc<ConfigStore>,
    upstream: Arc<dyn Upstream>,
    caller: Caller,
    target: Target,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let config = config.clone();
        let upstream = upstream.clone();
        let caller = caller.clone();
        let target = target.clone();
        async move {
            let engine = config.engine();
            let version = if request.version() == Version::HTTP_2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let request = request.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed());
            let mut response = engine.handle(upstream, caller, target, request).await;
            strip_hop_by_hop(response.headers_mut());
            *response.version_mut() = version;
            Ok(response)
        }
    })
}

/// Resolves once the waypoint drains; never if the drain signal is gone.
async fn draining(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
