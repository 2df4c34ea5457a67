//! The dashboard's HTTP server (hyper, HTTP/1.1): the page, its JSON, its event streams.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use super::api;
use super::assets::asset;
use super::events;
use super::options::{DashboardOptions, exposure, host_allowed, window_covers_refresh};
use super::query::params;
use super::sampler::Shared;
use super::source::Source;
use crate::sandbox::error::{Result, SandboxError};

type Reply = Response<BoxBody<Bytes, Infallible>>;

/// Serves the dashboard of `source` until the process is interrupted.
pub fn run(source: Source, options: DashboardOptions) -> Result<()> {
    window_covers_refresh(options.refresh, options.window).map_err(SandboxError::Invalid)?;
    if let Some(warning) =
        exposure(options.address, options.allow_remote).map_err(SandboxError::Invalid)?
    {
        eprintln!("{warning}");
    }
    let listener = std::net::TcpListener::bind(options.address).map_err(|e| {
        SandboxError::Invalid(format!(
            "dashboard: cannot listen on {}: {e}",
            options.address
        ))
    })?;
    let address = listener.local_addr().map_err(SandboxError::io(
        "reading the dashboard's address".to_owned(),
    ))?;
    let url = format!("http://{address}/");
    // A closed stdout must not stop the dashboard.
    let _ = writeln!(
        std::io::stdout(),
        "dashboard of {} at {url}",
        source.label()
    );
    let shared = Shared::new(source, options.clone());
    let sampler = shared.clone();
    std::thread::spawn(move || sampler.run());
    if options.open_browser {
        open_browser(&url);
    }
    let runtime = tokio::runtime::Runtime::new().map_err(SandboxError::io(
        "starting the dashboard's runtime".to_owned(),
    ))?;
    runtime.block_on(serve(listener, address.port(), shared))
}

/// Browser connections served at once (each event stream and tap holds one); more are
/// closed on accept.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send a request's head (also while idle between
/// requests): without it, idle connections would hold every slot and shut browsers out.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts connections forever, one task each, at most [`MAX_CONNECTIONS`] at once.
async fn serve(listener: std::net::TcpListener, port: u16, shared: Arc<Shared>) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(SandboxError::io("dashboard listener".to_owned()))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(SandboxError::io("dashboard listener".to_owned()))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, port, &request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one request.
fn route(shared: &Arc<Shared>, port: u16, request: &Request<Incoming>) -> Reply {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !host_allowed(host, port, shared.options.allow_remote) {
        let message = format!("Host {host:?}: open the dashboard as http://127.0.0.1:{port}/");
        return text(StatusCode::FORBIDDEN, message);
    }
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET".to_owned());
    }
    let query = params(request.uri().query());
    match request.uri().path() {
        "/api/snapshot" => json(api::snapshot(&shared.snapshot())),
        "/api/detail" => match api::detail(shared, &query) {
            Ok(value) => json(value),
            Err(why) => text(StatusCode::BAD_REQUEST, why),
        },
        "/api/events" => stream(events::refreshes(shared.clone())),
        "/api/tap" => match events::tap_options(&query) {
            Ok(options) => stream(events::tap(shared, options)),
            Err(why) => text(StatusCode::BAD_REQUEST, why),
        },
        path => match asset(path) {
            Some((content_type, body)) => reply(
                StatusCode::OK,
                content_type,
                Full::new(Bytes::from_static(body.as_bytes())).boxed(),
            ),
            None => text(StatusCode::NOT_FOUND, format!("{path}: no such page")),
        },
    }
}

fn reply(status: StatusCode, content_type: &str, body: BoxBody<Bytes, Infallible>) -> Reply {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = content_type.parse() {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

fn json(value: serde_json::Value) -> Reply {
    let body = Full::new(Bytes::from(value.to_string())).boxed();
    reply(StatusCode::OK, "application/json", body)
}

fn text(status: StatusCode, message: String) -> Reply {
    reply(
        status,
        "text/plain; charset=utf-8",
        Full::new(Bytes::from(message + "\n")).boxed(),
    )
}

fn stream(events: events::EventStream) -> Reply {
    reply(StatusCode::OK, "text/event-stream", events.boxed())
}

/// Opens `url` with `xdg-open` when there is one; says how to open it otherwise. Never fails.
fn open_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match opened {
        // Reaped in the background: xdg-open returns once the browser has the URL.
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(_) => eprintln!("no browser opened (xdg-open not found): open {url} yourself"),
    }
}
