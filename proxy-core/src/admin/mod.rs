//! The proxy's HTTP endpoints: `/config_dump` and `/tap` on localhost 15000 (no private keys,
//! no bodies), `/metrics`
//! on 15020 and `/healthz/ready` on 15021.
//!
//! Each endpoint is its own HTTP/1.1 listener with a bounded number of connections, small
//! request heads and a deadline per connection, so a misbehaving scraper cannot starve the
//! others or the proxy.

mod tap;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::identity::CertManager;
use crate::readiness::Readiness;
use crate::settings::AdminAddresses;
use crate::state::ProxyState;
use crate::tap::Tap;
use crate::telemetry::Metrics;

/// Response header naming the process that answered (its pid).
pub const PROCESS_HEADER: &str = "x-process-id";
/// Connections served at once per endpoint; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;
/// Request head buffer: hyper's minimum, plenty for the few short GETs served here.
const MAX_HEAD_BYTES: usize = 8192;
/// Time allowed to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of one connection, keep-alive included: an idle client must not hold a slot.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Kernel send buffer of each connection (the kernel doubles it): enough for any response to
/// flow, while a client that stops reading cannot make the kernel hold megabytes for it.
const SEND_BUFFER: usize = 64 * 1024;

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminContext {
    /// Config.
    pub state: ProxyState,
    /// Certificates.
    pub certs: Arc<CertManager>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness conditions.
    pub readiness: Readiness,
    /// Extra JSON sections for `/config_dump` (for example the captured pods).
    pub extra_dump: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// Text appended to `/metrics`: another registry of the same process, already in the
/// Prometheus text format (a waypoint's request metrics).
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Optional additions to the endpoints, for processes that embed them.
#[derive(Clone, Default)]
pub struct AdminExtensions {
    /// Appended to `/metrics`.
    pub extra_metrics: Option<ExtraMetrics>,
    /// Served at `/tap` on the admin listener.
    pub tap: Option<Arc<Tap>>,
}

/// What the handlers read: the context and the extensions.
struct Served {
    context: AdminContext,
    extensions: AdminExtensions,
}

/// Already bound listeners for the three endpoints (tests bind port 0 and read the ports).
pub struct AdminListeners {
    /// `/config_dump`.
    pub admin: TcpListener,
    /// `/metrics`.
    pub metrics: TcpListener,
    /// `/healthz/ready`.
    pub ready: TcpListener,
}

impl AdminListeners {
    /// Binds the three addresses.
    pub async fn bind(addresses: AdminAddresses) -> std::io::Result<Self> {
        Ok(Self {
            admin: bind(addresses.admin, "admin").await?,
            metrics: bind(addresses.metrics, "metrics").await?,
            ready: bind(addresses.ready, "readiness").await?,
        })
    }
}

async fn bind(address: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the {what} endpoint on {address}: {e}"),
        )
    })
}

/// Binds the three endpoints and serves them until `shutdown` fires.
pub async fn serve(
    addresses: AdminAddresses,
    context: AdminContext,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listeners = AdminListeners::bind(addresses).await?;
    serve_listeners(listeners, context, shutdown).await
}

/// Serves the three endpoints on `listeners` until `shutdown` becomes true (or its sender is
/// dropped); open connections are then closed.
pub async fn serve_listeners(
    listeners: AdminListeners,
    context: AdminContext,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_listeners_with(listeners, context, AdminExtensions::default(), shutdown).await
}

/// Like [`serve_listeners`], with `extensions`.
pub async fn serve_listeners_with(
    listeners: AdminListeners,
    context: AdminContext,
    extensions: AdminExtensions,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let context = Arc::new(Served {
        context,
        extensions,
    });
    tokio::join!(
        serve_endpoint(
            listeners.admin,
            Endpoint::Admin,
            context.clone(),
            shutdown.clone()
        ),
        serve_endpoint(
            listeners.metrics,
            Endpoint::Metrics,
            context.clone(),
            shutdown.clone()
        ),
        serve_endpoint(listeners.ready, Endpoint::Ready, context, shutdown),
    );
    Ok(())
}

/// Which of the three listeners a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Admin,
    Metrics,
    Ready,
}

async fn serve_endpoint(
    listener: TcpListener,
    endpoint: Endpoint,
    context: Arc<Served>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Dropping the set at the end aborts the connections still open.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically out of file descriptors: back off rather than spin.
                    tracing::warn!(?endpoint, error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        // A client that stops reading (a stalled tap) holds at most this much kernel memory.
        let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER);
        let context = context.clone();
        connections.spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (method, uri) = (request.method(), request.uri());
                    let mut response = if endpoint == Endpoint::Admin
                        && uri.path() == "/tap"
                        && method == Method::GET
                    {
                        tap::respond(context.extensions.tap.as_ref(), uri.query())
                    } else {
                        route(endpoint, method, uri.path(), &context).map(Either::Left)
                    };
                    // Tells apart two processes sharing the ports during an overlapping
                    // restart (SO_REUSEPORT), e.g. to wait for the successor's readiness.
                    response
                        .headers_mut()
                        .insert(PROCESS_HEADER, HeaderValue::from(std::process::id()));
                    async move { Ok::<_, Infallible>(response) }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .max_buf_size(MAX_HEAD_BYTES)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "admin connection error"),
                Err(_) => tracing::debug!(%remote, "admin connection closed at its deadline"),
            }
        });
    }
}

/// Completes once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Answers one request: 404 for unknown paths, 405 for methods other than GET and HEAD.
fn route(
    endpoint: Endpoint,
    method: &Method,
    path: &str,
    served: &Served,
) -> Response<Full<Bytes>> {
    let handler: fn(&Served) -> Response<Full<Bytes>> = match (endpoint, path) {
        (Endpoint::Admin, "/config_dump") => config_dump,
        (Endpoint::Metrics, "/metrics") => metrics,
        (Endpoint::Ready, "/healthz/ready") => ready,
        _ => return text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    handler(served)
}

/// `/config_dump`: the mesh config, the certificates (never keys) and the extra sections.
fn config_dump(served: &Served) -> Response<Full<Bytes>> {
    let context = &served.context;
    let dump = serde_json::json!({
        "config": context.state.config_dump(),
        "certificates": context.certs.dump(),
        "trust_bundle": context.certs.trust_bundle_dump(),
        "extra": (context.extra_dump)(),
    });
    match serde_json::to_vec_pretty(&dump) {
        Ok(body) => with_type(
            Response::new(Full::new(Bytes::from(body))),
            "application/json",
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serializing the config dump: {e}\n"),
        ),
    }
}

/// `/metrics`: Prometheus text, then the extra registry's, if any.
fn metrics(served: &Served) -> Response<Full<Bytes>> {
    let context = &served.context;
    let mut text = context.metrics.render();
    context
        .certs
        .render_metrics(&mut text, context.metrics.component());
    if let Some(extra) = &served.extensions.extra_metrics {
        text.push_str(&extra());
    }
    with_type(
        Response::new(Full::new(Bytes::from(text))),
        prometheus_registry::text::CONTENT_TYPE,
    )
}

/// `/healthz/ready`: 200 once config has arrived, every prefetched identity has a valid
/// certificate and no readiness condition is open; otherwise 503 listing what is missing.
fn ready(served: &Served) -> Response<Full<Bytes>> {
    let context = &served.context;
    let mut missing = Vec::new();
    if !context.state.is_synced() {
        missing.push("config: initial xDS response not yet applied".to_owned());
    }
    if !context.certs.all_ready() {
        missing.push("certificates: not every local workload has a valid certificate".to_owned());
    }
    missing.extend(context.readiness.pending());
    if missing.is_empty() {
        return text(StatusCode::OK, "ready\n".into());
    }
    let mut body = String::from("not ready:\n");
    for what in missing {
        body.push_str("- ");
        body.push_str(&what);
        body.push('\n');
    }
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = with_type(
        Response::new(Full::new(Bytes::from(body))),
        "text/plain; charset=utf-8",
    );
    *response.status_mut() = status;
    response
}

fn with_type(
    mut response: Response<Full<Bytes>>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests;
