//! Each HBONE `CONNECT` the waypoint receives: the original destination is its authority,
//! the caller is the TLS peer's identity and the address in `forwarded` (ztunnel sets it; the
//! TCP peer otherwise). TCP ports go to [`Passthrough`]; anything else is detected and served
//! as HTTP/2 or HTTP/1.1 with hyper (within the limits of [`super::serving`]), each request
//! handed to the engine in force.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::waypoint::Protocol;
use hbone::{ConnectHandler, IncomingConnect, Limit, LimitCounters, ServerLimits};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use proxy_core::telemetry::{HBONE_LISTENER, Metrics};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::config_store::ConfigStore;
use super::detect::{self, Detected, Prefixed};
use super::hop::strip_hop_by_hop;
use super::outbound::HboneUpstream;
use super::passthrough::Passthrough;
use super::serving::{self, Activity, HTTP_LISTENER, Serving};
use super::upgrade;
use crate::engine::{Body, BoxError, Caller, Target, UpstreamClient};

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
    /// What a peer may hold: on the HBONE listener all of it; on the HTTP served inside
    /// each tunnel, the HTTP/2 deadlines and bounds and the idle timeout.
    pub limits: ServerLimits,
}

impl Default for InboundSettings {
    fn default() -> Self {
        Self {
            detect_timeout: Duration::from_secs(1),
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            limits: ServerLimits::default(),
        }
    }
}

struct InboundShared {
    config: Arc<ConfigStore>,
    upstream: Arc<dyn UpstreamClient>,
    passthrough: Passthrough,
    settings: InboundSettings,
    /// Turns true when the waypoint drains: HTTP connections finish what they are doing and
    /// close (HTTP/1.1 after the current response, HTTP/2 with GOAWAY).
    drain: watch::Receiver<bool>,
    /// HTTP/1.1 and HTTP/2 serving with the settings' bounds, configured once.
    http: auto::Builder<TokioExecutor>,
    /// Connections the HBONE listener's limits end.
    hbone_counters: Arc<LimitCounters>,
    /// Connections the HTTP serving's limits end.
    http_counters: Arc<LimitCounters>,
}

/// The HBONE server's handler. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    inner: Arc<InboundShared>,
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
            inner: Arc::new(InboundShared {
                config,
                hbone_counters: metrics.connection_limits(HBONE_LISTENER),
                http_counters: metrics.connection_limits(HTTP_LISTENER),
                passthrough: Passthrough::new(upstream.clone(), metrics),
                upstream: Arc::new(upstream),
                http: http_builder(&settings),
                settings,
                drain,
            }),
        }
    }

    /// The limits of the HBONE listener serving this handler, and where it counts what
    /// they end.
    pub fn hbone_limits(&self) -> (ServerLimits, Arc<LimitCounters>) {
        (
            self.inner.settings.limits.clone(),
            self.inner.hbone_counters.clone(),
        )
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
    let limits = &settings.limits;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams)
        // RFC 8441: WebSocket (and other upgrades) over HTTP/2 streams.
        .enable_connect_protocol();
    builder
}

impl ConnectHandler for Inbound {
    fn handle(&self, connect: IncomingConnect) -> impl Future<Output = ()> + Send {
        handle(self.inner.clone(), connect)
    }
}

async fn handle(inner: Arc<InboundShared>, connect: IncomingConnect) {
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
            inner.http_counters.record(Limit::HeaderTimeout);
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
        Detected::Http2 => serve_http(&inner, stream, true, caller, target).await,
        Detected::Http1 | Detected::Opaque => {
            serve_http(&inner, stream, false, caller, target).await;
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (`http2`: prior knowledge) on `stream` until the client
/// closes, the waypoint drains, or a limit ends it.
async fn serve_http<S>(
    inner: &Arc<InboundShared>,
    stream: S,
    http2: bool,
    caller: Caller,
    target: Target,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let activity = Activity::default();
    let upstream = inner.upstream.clone();
    let service = service(
        inner.config.clone(),
        upstream,
        (caller, target),
        activity.clone(),
        inner.settings.limits.idle_timeout,
    );
    let serving = Serving {
        builder: &inner.http,
        limits: &inner.settings.limits,
        max_header_bytes: inner.settings.max_header_bytes,
        counters: &inner.http_counters,
        drain: inner.drain.clone(),
    };
    serving::serve(serving, stream, http2, activity, service).await;
}

/// Serves the bytes of an HTTP tunnel (after detection; `http2`: prior knowledge) with the
/// engine in `config`, as [`Inbound`] does with `settings`, until the client closes or a limit
/// ends it.
///
/// Public only so the HTTP path can be fuzzed without HBONE: it answers from the same builder,
/// limits and service as a tunnel, with `upstream` standing in for the endpoints.
#[doc(hidden)]
pub async fn serve_http_stream<S>(
    config: Arc<ConfigStore>,
    upstream: Arc<dyn UpstreamClient>,
    settings: &InboundSettings,
    stream: S,
    http2: bool,
    origin: (Caller, Target),
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // The sender stays alive for the whole connection: a closed channel would drain.
    let (_never, drain) = watch::channel(false);
    let activity = Activity::default();
    let idle_timeout = settings.limits.idle_timeout;
    let service = service(config, upstream, origin, activity.clone(), idle_timeout);
    let serving = Serving {
        builder: &http_builder(settings),
        limits: &settings.limits,
        max_header_bytes: settings.max_header_bytes,
        counters: &LimitCounters::new(),
        drain,
    };
    serving::serve(serving, stream, http2, activity, service).await;
}

/// The hyper service of one connection: each request goes to the engine in force when it
/// arrives, and its answer goes back in the protocol of the request. An upgrade the upstream
/// accepts is relayed (see [`upgrade`]) until both sides close or nothing moves for
/// `idle_timeout`.
fn service(
    config: Arc<ConfigStore>,
    upstream: Arc<dyn UpstreamClient>,
    (caller, target): (Caller, Target),
    activity: Activity,
    idle_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let config = config.clone();
        let upstream = upstream.clone();
        let caller = caller.clone();
        let target = target.clone();
        let active = activity.start();
        async move {
            let engine = config.engine();
            let version = if request.version() == Version::HTTP_2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let client_upgrade = upgrade::accept(&mut request);
            let request = request.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed());
            let mut response = engine.handle(upstream, caller, target, request).await;
            *response.version_mut() = version;
            if let Some(client_upgrade) = client_upgrade
                && response.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                // The relay holds the request as active until it ends.
                client_upgrade.answer(&mut response, idle_timeout, active);
                return Ok(response);
            }
            strip_hop_by_hop(response.headers_mut());
            Ok(response.map(|body| Activity::track(active, body)))
        }
    })
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
