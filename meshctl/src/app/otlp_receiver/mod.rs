//! `meshctl app otlp-receiver`: an OpenTelemetry collector stand-in for demos and tests. One
//! port serves OTLP/gRPC `TraceService/Export` (h2c) and OTLP/HTTP `POST /v1/traces`
//! (protobuf), holds what it receives (bounded by `--max-spans`), prints a line per span, and
//! lists the spans at `GET /spans` and its counters at `GET /stats`. `--delay-ms` and
//! `--fail-rate` make it a slow or failing collector, to test exporters against.

mod grpc;
mod spans;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::io::Write as _;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use api::otlp::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::error::AppError;
use super::http_echo::parse_fail_rate;
use super::listen::{MAX_CONNECTIONS, accept_bounded, bind};
use controller::shutdown::signal as shutdown_signal;
use grpc::{Body, Code};
pub use spans::{ReceivedSpan, ReceiverStats, SpanStore};

/// OTLP's default gRPC port (the receiver's default too).
pub const DEFAULT_PORT: u16 = 4317;
/// The gRPC method exporters call.
pub const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// OTLP/HTTP's path for traces.
pub const HTTP_TRACES_PATH: &str = "/v1/traces";
/// `GET`: every span held, as a JSON array of [`ReceivedSpan`]; `DELETE`: forget them.
pub const SPANS_PATH: &str = "/spans";
/// `GET`: the counters, as JSON [`ReceiverStats`].
pub const STATS_PATH: &str = "/stats";
/// The largest export request read (OTLP exporters batch well below this).
const MAX_EXPORT_BYTES: usize = 16 << 20;
/// OTLP/HTTP's binary content type.
const PROTOBUF: &str = "application/x-protobuf";

/// Arguments of `meshctl app otlp-receiver`.
#[derive(clap::Args, Debug, Clone)]
pub struct OtlpReceiverArgs {
    /// Port to listen on, on all addresses (gRPC and HTTP alike).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Most spans held; later ones are counted as dropped.
    #[arg(long, default_value_t = 100_000)]
    pub max_spans: usize,
    /// Delay before answering each export, in milliseconds (a slow collector).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Share of exports answered UNAVAILABLE (HTTP 503), from 0.0 to 1.0, spread evenly:
    /// 0.5 refuses every second export.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fail_rate)]
    pub fail_rate: f64,
    /// Print nothing per span (benchmarks: the log would cost more than the receiving).
    #[arg(long)]
    pub quiet: bool,
}

/// How the receiver behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceiverSettings {
    /// Most spans held.
    pub max_spans: usize,
    /// Delay before answering each export.
    pub delay: Duration,
    /// Share of exports refused.
    pub fail_rate: f64,
    /// Whether to print a line per span.
    pub print_spans: bool,
}

impl From<&OtlpReceiverArgs> for ReceiverSettings {
    fn from(args: &OtlpReceiverArgs) -> Self {
        ReceiverSettings {
            max_spans: args.max_spans,
            delay: Duration::from_millis(args.delay_ms),
            fail_rate: args.fail_rate,
            print_spans: !args.quiet,
        }
    }
}

/// Runs the receiver until SIGTERM or Ctrl-C.
pub async fn run(args: OtlpReceiverArgs) -> Result<(), AppError> {
    let listener = bind(args.port).await?;
    tracing::info!(port = args.port, "otlp-receiver listening");
    serve(listener, ReceiverSettings::from(&args), shutdown_signal()).await
}

/// Serves OTLP (gRPC over h2c, HTTP/1.1 and HTTP/2) and the listing on `listener` until
/// `shutdown` completes. Spans printed go to stdout.
pub async fn serve(
    listener: TcpListener,
    settings: ReceiverSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let state = Arc::new(State {
        settings,
        store: SpanStore::new(settings.max_spans),
        exports: AtomicU64::new(0),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = pin!(shutdown);
    while let Some((permit, stream, peer)) =
        accept_bounded("otlp-receiver", &listener, &slots, &mut shutdown).await
    {
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| handle(state.clone(), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("otlp-receiver connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Shared by all connections.
struct State {
    settings: ReceiverSettings,
    store: SpanStore,
    /// Exports answered so far, accepted or refused: what `--fail-rate` spreads over.
    exports: AtomicU64,
}

impl State {
    /// Whether this export is one `--fail-rate` refuses: the n-th export fails when
    /// `floor(n × rate)` steps up, so refusals are spread evenly and exactly.
    fn refuse_next(&self) -> bool {
        let n = self.exports.fetch_add(1, Ordering::Relaxed) as f64;
        let rate = self.settings.fail_rate;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path();
    if grpc::is_grpc(request.headers()) {
        return Ok(if path == GRPC_EXPORT_PATH {
            grpc_export(&state, request).await
        } else {
            grpc::failure(Code::Unimplemented, &format!("no method {path}"))
        });
    }
    Ok(match (request.method(), path) {
        (&Method::POST, HTTP_TRACES_PATH) => http_export(&state, request).await,
        (&Method::GET, SPANS_PATH) => json(&state.store.spans()),
        (&Method::DELETE, SPANS_PATH) => json(&state.store.clear()),
        (&Method::GET, STATS_PATH) => json(&state.store.stats()),
        (_, HTTP_TRACES_PATH | SPANS_PATH | STATS_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: POST /v1/traces or gRPC TraceService/Export, GET /spans, GET /stats",
        ),
    })
}

/// How an export ended: accepted, refused on purpose, or not understood.
enum Outcome {
    Accepted,
    Refused,
    Invalid(String),
}

/// Decodes, waits `--delay-ms`, rolls `--fail-rate`, then records and prints the spans.
async fn export(state: &State, message: &[u8]) -> Outcome {
    let request = match ExportTraceServiceRequest::decode(message) {
        Ok(request) => request,
        Err(e) => return Outcome::Invalid(format!("not an ExportTraceServiceRequest: {e}")),
    };
    if !state.settings.delay.is_zero() {
        tokio::time::sleep(state.settings.delay).await;
    }
    if state.refuse_next() {
        state.store.refuse();
        return Outcome::Refused;
    }
    let kept = state.store.record(&request);
    if state.settings.print_spans {
        print_spans(&kept);
    }
    Outcome::Accepted
}

async fn grpc_export(state: &State, request: Request<Incoming>) -> Response<Body> {
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(message) => return grpc::failure(Code::InvalidArgument, &message),
    };
    let message = match grpc::unframe(&body) {
        Ok(message) => message,
        Err((code, message)) => return grpc::failure(code, &message),
    };
    match export(state, message).await {
        Outcome::Accepted => grpc::reply(&ExportTraceServiceResponse::default().encode_to_vec()),
        Outcome::Refused => grpc::failure(Code::Unavailable, "refused by --fail-rate"),
        Outcome::Invalid(message) => grpc::failure(Code::InvalidArgument, &message),
    }
}

async fn http_export(state: &State, request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type != Some(PROTOBUF) {
        let got = content_type.unwrap_or("none");
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("content type {got} is not supported: send {PROTOBUF}"),
        );
    }
    if headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v != "identity")
    {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed bodies are not supported",
        );
    }
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(message) => return text(StatusCode::PAYLOAD_TOO_LARGE, &message),
    };
    match export(state, &body).await {
        Outcome::Accepted => {
            state.store.count_http();
            let reply = ExportTraceServiceResponse::default().encode_to_vec();
            response(StatusCode::OK, PROTOBUF, Bytes::from(reply))
        }
        Outcome::Refused => text(StatusCode::SERVICE_UNAVAILABLE, "refused by --fail-rate"),
        Outcome::Invalid(message) => text(StatusCode::BAD_REQUEST, &message),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, String> {
    Limited::new(request.into_body(), MAX_EXPORT_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| format!("reading the export request: {e}"))
}

/// Writes [`span_line`] of every span to stdout.
fn print_spans(spans: &[ReceivedSpan]) {
    let mut out = std::io::stdout().lock();
    for span in spans {
        // A closed stdout must not stop the receiver from receiving.
        let _ = writeln!(out, "{}", span_line(span));
    }
    let _ = out.flush();
}

/// What the receiver prints for a span: `trace=… span=… parent=… name="…" service=…`, with
/// `parent=-` for a root.
pub fn span_line(span: &ReceivedSpan) -> String {
    let parent = if span.parent_span_id.is_empty() {
        "-"
    } else {
        &span.parent_span_id
    };
    format!(
        "trace={} span={} parent={parent} name={:?} service={}",
        span.trace_id, span.span_id, span.name, span.service_name
    )
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(StatusCode::OK, "application/json", Bytes::from(body)),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    response(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(format!("{message}\n")),
    )
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
