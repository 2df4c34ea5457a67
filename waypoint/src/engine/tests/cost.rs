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
        Box::pin(async { Ok(Response::new(body::full("hello"))) })
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
    measure(tracing::Level::INFO, Some(0)).await;
}

/// The same with the access log filtered out, to tell its share from the rest.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request_without_access_log() {
    measure(tracing::Level::WARN, Some(0)).await;
}

/// The same with an upstream that gives no state version: labels and endpoint lists are
/// built again for every request.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run it in release mode with --ignored --nocapture"]
async fn cost_of_one_request_without_state_version() {
    measure(tracing::Level::WARN, None).await;
}

async fn measure(level: tracing::Level, version: Option<u64>) {
    // As the binary sets it up: log lines (the access log's too) go to stdout.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(false)
        .with_max_level(level)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let e = engine(&waypoint(
        vec![reviews(vec![route("all", vec![], forward(&[("", 1)]))])],
        vec![],
        vec![],
    ));
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
    let one = || async {
        let request = request("GET", "/reviews/1?x=y", &[("user-agent", "bench")], "");
        let response = e
            .handle(upstream.clone(), caller("web"), target.clone(), request)
            .await;
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    };
    for _ in 0..20_000 {
        one().await;
    }
    let n = 500_000;
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        one().await;
    }
    let per = started.elapsed().as_nanos() as f64 / f64::from(n);
    let cpu = (cpu_seconds() - cpu) * 1e9 / f64::from(n);
    eprintln!(
        "engine, log level {level}, state version {version:?}: {per:.0} ns per request, \
         {cpu:.0} ns of CPU (all threads)"
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
