//! What one request costs the engine, measured rather than asserted: `cargo test --release -p
//! waypoint --lib cost -- --ignored --nocapture > /dev/null` prints (to stderr) the time per
//! request of the whole pipeline (identification, routing, endpoint choice, metrics, the
//! access log line) against an upstream that answers at once, and the CPU time the process
//! spent per request on all its threads. The access log is on; its lines go to stdout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;

use super::cfg::*;
use crate::engine::{Body, Caller, EndpointInfo, Target, UpstreamClient, WorkloadMeta, body};

/// An upstream that answers 200 at once, with the same lookups a real one makes.
struct Instant200 {
    endpoints: Vec<EndpointInfo>,
    /// `None`: the engine may keep nothing between requests.
    version: Option<u64>,
}

impl UpstreamClient for Instant200 {
    fn endpoints(&self, _namespace: &str, _hostname: &str, _port: u16) -> Vec<EndpointInfo> {
        self.endpoints.clone()
    }

    fn service_by_vip(&self, _ip: IpAddr) -> Option<(String, String)> {
        None
    }

    fn send(
        &self,
        _endpoint: &EndpointInfo,
        _caller: &Caller,
        _request: Request<Body>,
    ) -> crate::engine::SendFuture {
        // `grpc-status` for the span exports of the traced runs; plain requests ignore it.
        let mut response = Response::new(body::full("hello"));
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        Box::pin(async { Ok(response) })
    }

    fn state_version(&self) -> Option<u64> {
        self.version
    }

    fn workload(&self, ip: IpAddr) -> Option<WorkloadMeta> {
        Some(WorkloadMeta {
            workload: format!("w-{ip}"),
            namespace: "shop".into(),
            canonical_service: "reviews".into(),
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
            identity: Some("spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap()),
        })
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request() {
    measure(tracing::Level::INFO, Some(0), None).await;
}

/// The same for a traced service sampling no trace: the context is continued and written
/// upstream, no span is built.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request_traced_at_0_percent() {
    measure(tracing::Level::WARN, Some(0), Some(0.0)).await;
}

/// The same sampling every trace: a server and a client span per request, built, queued and
/// exported in batches (to an upstream that answers at once).
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request_traced_at_100_percent() {
    measure(tracing::Level::WARN, Some(0), Some(100.0)).await;
}

/// The same with the access log filtered out, to tell its share from the rest.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request_without_access_log() {
    measure(tracing::Level::WARN, Some(0), None).await;
}

/// The same with an upstream that gives no state version: labels and endpoint lists are
/// built again for every request.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request_without_state_version() {
    measure(tracing::Level::WARN, None, None).await;
}

/// The config measured: one route to `reviews`, traced at `percentage` when given.
fn config(percentage: Option<f64>) -> api::waypoint::Waypoint {
    use api::waypoint as pb;
    let mut service = reviews(vec![route("all", vec![], forward(&[("", 1)]))]);
    let mut w = waypoint(vec![], vec![], vec![]);
    if let Some(percentage) = percentage {
        service.telemetry = Some(pb::Telemetry {
            tracing: Some(pb::Tracing {
                provider: "otel".into(),
                random_sampling_percentage: percentage,
                ..Default::default()
            }),
            ..Default::default()
        });
        w.tracing_providers = vec![pb::TracingProvider {
            name: "otel".into(),
            service: "otel.observability.svc.cluster.local".into(),
            namespace: "observability".into(),
            port: 4317,
            ..Default::default()
        }];
    }
    w.services = vec![service];
    w
}

async fn measure(level: tracing::Level, version: Option<u64>, traced: Option<f64>) {
    // As the binary sets it up: log lines (the access log's too) go to stdout.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let e = engine(&config(traced));
    let upstream: Arc<dyn UpstreamClient> = Arc::new(Instant200 {
        endpoints: (1..=8)
            .map(|i| EndpointInfo {
                uid: format!("Kubernetes//Pod/shop/reviews-{i}"),
                address: SocketAddr::new(IpAddr::from([10, 0, 1, i]), PORT),
            })
            .collect(),
        version,
    });
    let target = Target {
        address: SocketAddr::new(VIP.parse().unwrap(), PORT),
    };
    let (e, upstream, target) = (&e, &upstream, &target);
    let one = |i: u32| async move {
        // The span export task runs on this thread too: give it its turn.
        if i.is_multiple_of(32) {
            tokio::task::yield_now().await;
        }
        let request = request("GET", "/reviews/1?x=y", &[("user-agent", "bench")], "");
        let response = e
            .handle(upstream.clone(), caller("web"), target.clone(), request)
            .await;
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    };
    for i in 0..20_000 {
        one(i).await;
    }
    let n = 500_000;
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for i in 0..n {
        one(i).await;
    }
    let per = started.elapsed().as_nanos() as f64 / f64::from(n);
    let cpu = (cpu_seconds() - cpu) * 1e9 / f64::from(n);
    let spans: Vec<String> = e
        .runtime
        .render_metrics()
        .lines()
        .filter(|l| l.starts_with("waypoint_trace_spans_total{"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "engine, log level {level}, state version {version:?}, traced {traced:?}: {per:.0} ns \
         per request, {cpu:.0} ns of CPU (all threads); {spans:?}"
    );
}

/// User and system time of this process so far, from `/proc/self/stat` (in clock ticks of
/// 10 ms: enough over a run of seconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
