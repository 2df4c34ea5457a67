//! `meshctl app http-echo`: an HTTP/1.1 + h2c echo server that tells who
//! answered and what it received, with knobs for failures and latency; a WebSocket
//! upgrade on any path is a WebSocket echo (see [`super::ws_echo`]).

use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::client::{self, MAX_BODY, RequestTemplate, Target};
use super::echo_reply::{EchoReply, EchoStats, Overrides, PROPAGATED_HEADERS, embed_upstream};
use super::error::AppError;
use super::identity::Identity;
use super::listen::{MAX_CONNECTIONS, accept_bounded, bind};
use super::ws_echo;
use controller::shutdown::signal as shutdown_signal;

/// Path of the request counter; not counted itself.
pub const STATS_PATH: &str = "/_echo/stats";
/// Response header naming the pod that answered.
pub const POD_HEADER: &str = "x-echo-pod";
/// How long in-flight requests get to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `meshctl app http-echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpEchoArgs {
    /// Port to listen on, on all addresses.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Share of requests answered 503, from 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fail_rate)]
    pub fail_rate: f64,
    /// Delay added before every reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Status code of every reply (default 200).
    #[arg(long, value_parser = parse_status)]
    pub status: Option<StatusCode>,
    /// Also GET this URL for every request and embed its JSON reply under "upstream".
    #[arg(long)]
    pub upstream: Option<String>,
    /// Deadline of the upstream call, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub upstream_timeout_ms: u64,
}

/// Parses a share from 0.0 to 1.0 (`--fail-rate`).
pub(super) fn parse_fail_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{s:?} is not a number from 0.0 to 1.0")),
    }
}

fn parse_status(s: &str) -> Result<StatusCode, String> {
    s.parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{s:?} is not an HTTP status code"))
}

/// How the echo server behaves.
#[derive(Debug, Clone)]
pub struct EchoSettings {
    /// Who we report to be.
    pub identity: Identity,
    /// Share of requests answered 503.
    pub fail_rate: f64,
    /// Delay before every reply.
    pub latency: Duration,
    /// Status of replies that do not fail.
    pub status: StatusCode,
    /// Service to call for every request.
    pub upstream: Option<Target>,
    /// Deadline of the upstream call, in milliseconds.
    pub upstream_timeout_ms: u64,
}

impl EchoSettings {
    /// Builds the configuration from the command line and an identity.
    pub fn from_args(args: &HttpEchoArgs, identity: Identity) -> Result<Self, AppError> {
        Ok(EchoSettings {
            identity,
            fail_rate: args.fail_rate,
            latency: Duration::from_millis(args.latency_ms),
            status: args.status.unwrap_or(StatusCode::OK),
            upstream: args.upstream.as_deref().map(Target::parse).transpose()?,
            upstream_timeout_ms: args.upstream_timeout_ms,
        })
    }

    /// A plain 200 server with this identity.
    pub fn new(identity: Identity) -> Self {
        EchoSettings {
            identity,
            fail_rate: 0.0,
            latency: Duration::ZERO,
            status: StatusCode::OK,
            upstream: None,
            upstream_timeout_ms: 5000,
        }
    }
}

/// Runs `http-echo` until SIGTERM or Ctrl-C.
pub async fn run(args: HttpEchoArgs) -> Result<(), AppError> {
    let config = EchoSettings::from_args(&args, Identity::from_env())?;
    let listener = bind(args.port).await?;
    tracing::info!(port = args.port, pod = %config.identity.pod, "http-echo listening");
    serve(listener, config, shutdown_signal()).await
}

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown` completes, then
/// lets in-flight requests finish (bounded by a drain timeout).
pub async fn serve(
    listener: TcpListener,
    config: EchoSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let state = Arc::new(State::new(config));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer enables hyper's header read timeout, so idle half-open
    // clients cannot hold connection slots for ever.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = pin!(shutdown);
    while let Some((permit, stream, peer)) =
        accept_bounded("http-echo", &listener, &slots, &mut shutdown).await
    {
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req| handle(state.clone(), peer, req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("http-echo connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("http-echo: drain timed out"),
    }
    Ok(())
}

/// Shared by all connections of one server.
struct State {
    config: EchoSettings,
    pod_header: HeaderValue,
    requests: AtomicU64,
    rng: Rng,
}

impl State {
    fn new(config: EchoSettings) -> Self {
        let pod_header = HeaderValue::from_str(&config.identity.pod)
            .unwrap_or(HeaderValue::from_static("invalid-pod-name"));
        State {
            config,
            pod_header,
            requests: AtomicU64::new(0),
            rng: Rng::new(),
        }
    }

    fn roll_failure(&self) -> bool {
        self.config.fail_rate > 0.0 && self.rng.next_f64() < self.config.fail_rate
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == STATS_PATH {
        let stats = EchoStats {
            requests: state.requests.load(Ordering::Relaxed),
        };
        return Ok(json_response(&state, StatusCode::OK, &stats));
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    if ws_echo::is_websocket(&request) {
        return Ok(match ws_echo::accept(request) {
            Ok(switching) => {
                let mut response = switching.map(|()| Full::new(Bytes::new()));
                let headers = response.headers_mut();
                headers.insert(POD_HEADER, state.pod_header.clone());
                response
            }
            Err(status) => text_response(&state, status, "no Sec-WebSocket-Key".into()),
        });
    }
    Ok(echo(&state, peer, request).await)
}

async fn echo(
    state: &State,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let config = &state.config;
    let overrides = match Overrides::parse(request.uri().query()) {
        Ok(o) => o,
        Err(msg) => return text_response(state, StatusCode::BAD_REQUEST, msg),
    };
    let (parts, body) = request.into_parts();
    // Read (and discard) the body, bounded, so the connection stays reusable.
    if let Err(e) = Limited::new(body, MAX_BODY).collect().await {
        return text_response(state, StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
    }
    let latency = overrides.latency.unwrap_or(config.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut status = match overrides.status {
        Some(status) => status,
        None if state.roll_failure() => StatusCode::SERVICE_UNAVAILABLE,
        None => config.status,
    };
    let mut reply = EchoReply::new(&config.identity, &parts, peer);
    if let Some(target) = &config.upstream {
        let (value, ok) = call_upstream(config, target, &parts.headers).await;
        reply.upstream = Some(value);
        // Make an upstream failure visible to whoever called us.
        if !ok && status.is_success() {
            status = StatusCode::BAD_GATEWAY;
        }
    }
    json_response(state, status, &reply)
}

async fn call_upstream(
    config: &EchoSettings,
    target: &Target,
    incoming: &HeaderMap,
) -> (serde_json::Value, bool) {
    let mut headers = HeaderMap::new();
    for name in PROPAGATED_HEADERS {
        for value in incoming.get_all(*name) {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    let template = RequestTemplate {
        target: target.clone(),
        method: Method::GET,
        headers,
        body: Bytes::new(),
        http2: false,
    };
    embed_upstream(client::fetch(&template, config.upstream_timeout_ms, MAX_BODY).await)
}

fn json_response(
    state: &State,
    status: StatusCode,
    value: &impl serde::Serialize,
) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => response(state, status, "application/json", body),
        Err(e) => text_response(state, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn text_response(state: &State, status: StatusCode, text: String) -> Response<Full<Bytes>> {
    response(
        state,
        status,
        "text/plain; charset=utf-8",
        format!("{text}\n").into_bytes(),
    )
}

fn response(
    state: &State,
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(POD_HEADER, state.pod_header.clone());
    response
}

/// A tiny lock-free PRNG (SplitMix64) for the fail rate: statistical quality
/// is plenty for "fail about this share", and it needs no dependency.
struct Rng(AtomicU64);

impl Rng {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    fn new() -> Self {
        // RandomState is seeded randomly per process.
        Rng(AtomicU64::new(
            RandomState::new().hash_one(std::process::id()),
        ))
    }

    /// Uniform in [0, 1).
    fn next_f64(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::client::{Reply, fetch};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), AppError>>,
    }

    async fn start(config: EchoSettings) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn config(pod: &str) -> EchoSettings {
        let identity = Identity {
            pod: pod.into(),
            namespace: "shop".into(),
            version: "v2".into(),
        };
        EchoSettings::new(identity)
    }

    async fn get(addr: SocketAddr, path: &str, http2: bool, headers: &[&str]) -> Reply {
        let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        let url = format!("http://{addr}{path}");
        let template = RequestTemplate::new(&url, None, &headers, None, http2).unwrap();
        fetch(&template, 5000, MAX_BODY).await.unwrap()
    }

    fn body(reply: &Reply) -> EchoReply {
        serde_json::from_slice(&reply.body).unwrap()
    }

    #[tokio::test]
    async fn http1_reports_request_and_client() {
        let server = start(config("echo-1")).await;
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let client = stream.local_addr().unwrap();
        let request = "GET /a/b?c=d HTTP/1.1\r\nhost: svc\r\nx-one: 1\r\nconnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, json) = raw.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("x-echo-pod: echo-1"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let echo: EchoReply = serde_json::from_str(json).unwrap();
        assert_eq!(echo.pod, "echo-1");
        assert_eq!(echo.namespace, "shop");
        assert_eq!(echo.version, "v2");
        assert_eq!(echo.method, "GET");
        assert_eq!(echo.path, "/a/b?c=d");
        assert_eq!(echo.protocol, "HTTP/1.1");
        assert_eq!(echo.headers["x-one"], "1");
        assert_eq!(echo.headers["host"], "svc");
        assert_eq!(echo.client, client.to_string());
        assert!(echo.upstream.is_none());
    }

    #[tokio::test]
    async fn h2c_on_the_same_port() {
        let server = start(config("echo-2")).await;
        let reply = get(server.addr, "/h2?x=1", true, &["x-two: 2"]).await;
        assert_eq!(reply.version, http::Version::HTTP_2);
        assert_eq!(reply.headers[POD_HEADER], "echo-2");
        let echo = body(&reply);
        assert_eq!(echo.protocol, "HTTP/2.0");
        assert_eq!(echo.path, "/h2?x=1");
        assert_eq!(echo.headers["x-two"], "2");
        assert!(echo.client.starts_with("127.0.0.1:"), "{}", echo.client);
        assert_ne!(echo.client, "127.0.0.1:0");
    }

    #[tokio::test]
    async fn fail_rate_one_fails_everything() {
        let server = start(EchoSettings {
            fail_rate: 1.0,
            ..config("echo-3")
        })
        .await;
        for http2 in [false, true, false] {
            let reply = get(server.addr, "/", http2, &[]).await;
            assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                body(&reply).pod,
                "echo-3",
                "failed replies still say who failed"
            );
        }
    }

    #[tokio::test]
    async fn status_flag_and_query_overrides() {
        let server = start(EchoSettings {
            status: StatusCode::CREATED,
            ..config("echo-4")
        })
        .await;
        assert_eq!(
            get(server.addr, "/", false, &[]).await.status,
            StatusCode::CREATED
        );
        let reply = get(server.addr, "/?status=418&latency_ms=10", false, &[]).await;
        assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
        assert_eq!(
            get(server.addr, "/?status=x", false, &[]).await.status,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn embeds_upstream_reply_and_propagates_trace_headers() {
        let backend = start(config("orders-v1")).await;
        let url = format!("http://{}/orders", backend.addr);
        let frontend_config = EchoSettings {
            upstream: Some(Target::parse(&url).unwrap()),
            ..config("frontend")
        };
        let frontend = start(frontend_config).await;
        let reply = get(
            frontend.addr,
            "/",
            false,
            &["x-request-id: abc", "x-private: no"],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let echo = body(&reply);
        assert_eq!(echo.pod, "frontend");
        let upstream: EchoReply = serde_json::from_value(echo.upstream.unwrap()).unwrap();
        assert_eq!(upstream.pod, "orders-v1");
        assert_eq!(upstream.path, "/orders");
        assert_eq!(upstream.headers["x-request-id"], "abc");
        assert!(!upstream.headers.contains_key("x-private"));
    }

    #[tokio::test]
    async fn forwards_w3c_and_b3_trace_headers_upstream() {
        let backend = start(config("payments")).await;
        let url = format!("http://{}/", backend.addr);
        let frontend = start(EchoSettings {
            upstream: Some(Target::parse(&url).unwrap()),
            ..config("orders")
        })
        .await;
        let trace_headers = [
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=1"),
            (
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
        ];
        let lines: Vec<String> = trace_headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}"))
            .collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let reply = get(frontend.addr, "/", false, &lines).await;
        assert_eq!(reply.status, StatusCode::OK);
        let upstream: EchoReply = serde_json::from_value(body(&reply).upstream.unwrap()).unwrap();
        for (name, value) in trace_headers {
            assert_eq!(
                upstream.headers.get(name).map(String::as_str),
                Some(value),
                "{name}"
            );
        }
    }

    #[tokio::test]
    async fn upstream_failure_is_a_bad_gateway() {
        let backend = start(EchoSettings {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..config("b")
        })
        .await;
        let url = format!("http://{}/", backend.addr);
        let frontend = start(EchoSettings {
            upstream: Some(Target::parse(&url).unwrap()),
            ..config("f")
        })
        .await;
        let reply = get(frontend.addr, "/", false, &[]).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(body(&reply).upstream.unwrap()["status"], 503);
    }

    #[tokio::test]
    async fn stats_count_echoed_requests_only() {
        let server = start(config("echo-5")).await;
        for http2 in [false, true, false] {
            get(server.addr, "/", http2, &[]).await;
        }
        let stats = get(server.addr, STATS_PATH, false, &[]).await;
        let stats: EchoStats = serde_json::from_slice(&stats.body).unwrap();
        assert_eq!(stats, EchoStats { requests: 3 });
        let stats = get(server.addr, STATS_PATH, true, &[]).await;
        assert_eq!(
            serde_json::from_slice::<EchoStats>(&stats.body)
                .unwrap()
                .requests,
            3
        );
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let server = start(config("echo-6")).await;
        let url = format!("http://{}/", server.addr);
        let big = "x".repeat(MAX_BODY + 1);
        let template = RequestTemplate::new(&url, None, &[], Some(&big), false).unwrap();
        let reply = fetch(&template, 5000, MAX_BODY).await.unwrap();
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn shutdown_drains_in_flight_requests() {
        let mut server = start(config("echo-7")).await;
        let addr = server.addr;
        let slow = tokio::spawn(async move { get(addr, "/?latency_ms=200", false, &[]).await });
        // Let the slow request reach the server before stopping it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server.stop.take().unwrap().send(()).unwrap();
        assert_eq!(slow.await.unwrap().status, StatusCode::OK);
        server.task.await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_fail_rate("1.5").is_err());
        assert!(parse_fail_rate("-0.1").is_err());
        assert_eq!(parse_fail_rate("0.25"), Ok(0.25));
        assert!(parse_status("99").is_err());
        assert_eq!(parse_status("503"), Ok(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn rng_is_uniform_enough() {
        let rng = Rng::new();
        let draws: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = draws.iter().filter(|x| **x < 0.5).count();
        assert!((4000..6000).contains(&below_half), "{below_half}");
    }
}
