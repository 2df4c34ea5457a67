//! HTTP requests pod to pod directly against the same requests through the L7 path (client's
//! ztunnel, HBONE to the waypoint, HBONE on to the server's ztunnel), HTTP/1.1 and HTTP/2 (h2c
//! with prior knowledge), in one sandbox and one run.
//!
//! `cargo build --release -p meshctl -p controller -p ztunnel -p waypoint && cargo bench -p e2e --bench waypoint`
//!
//! The sandbox holds a client (node1) and an echo server (`meshctl app http-echo`, node2) in a
//! plain namespace, and the same pair in an ambient namespace whose Service is bound to a
//! waypoint. The client runs `meshctl app load`. Measured for each path and protocol:
//!
//! - throughput: `WAYPOINT_BENCH_REQUESTS` requests (default 50 000), `WAYPOINT_BENCH_CONCURRENCY`
//!   in flight (default 16), as fast as they go: requests per second, and requests per second
//!   per CPU core, counting every process on the path (client, server, and for the L7 path
//!   both ztunnels and the waypoint), from `/proc` and `getrusage`;
//! - latency: `WAYPOINT_BENCH_RATE` requests per second (default 500) for `WAYPOINT_BENCH_SECS`
//!   (default 10), spread over 64 connections so a slow answer does not hold back the next
//!   request: p50 and p99 of the request latencies `load` measures;
//!
//! and the waypoint's resident memory, idle and after the runs.
//!
//! With `WAYPOINT_BENCH_TRACING=PERCENT`, a Telemetry in the root namespace traces the mesh
//! namespace's requests at that sampling percentage, to an OTLP receiver (`meshctl app
//! otlp-receiver --quiet`) in a namespace outside the mesh; the receiver's CPU is not counted
//! as the path's.

use std::time::Duration;

use e2e::manifests::{echo_pod, idle_pod};
use e2e::measure::{children_cpu_seconds, env_or, full_run, proc_usage, rss_mib};
use e2e::mesh::{NODES, pod_pids, wait_ready, ztunnel_pid};
use e2e::metrics::requests_total;
use e2e::{SETTLE, Sandbox, eventually};
use meshctl::app::load_report::LoadReport;
use test_support::manifests::namespace;

/// The echo server's port.
const PORT: u16 = 8080;

/// The OTLP receiver, the mesh config declaring it and a mesh-wide Telemetry sampling
/// `percentage`.
fn tracing(percentage: &str) -> String {
    "---\n".to_owned()
        + &namespace("observability", false)
        + &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: collector, namespace: observability, labels: {{app: collector}}}}
spec:
  nodeName: node1
  containers:
  - name: receiver
    command: [meshctl, app, otlp-receiver, --port, "4317", --quiet]
---
apiVersion: v1
kind: Service
metadata: {{name: collector, namespace: observability}}
spec:
  selector: {{app: collector}}
  ports: [{{name: grpc-otlp, port: 4317, appProtocol: grpc}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
    extensionProviders:
    - name: otel
      opentelemetry: {{service: collector.observability.svc.cluster.local, port: 4317}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing: [{{providers: [{{name: otel}}], randomSamplingPercentage: {percentage}}}]
---
"#
        )
}

/// The same client (node1), echo server (node2) and Service `echo` in both namespaces; in
/// `mesh`, the Service is bound to the namespace's waypoint.
fn manifests() -> String {
    let mut yaml = String::new();
    for (ns, ambient, service_labels) in [
        ("direct", false, "{}"),
        ("mesh", true, "{istio.io/use-waypoint: waypoint}"),
    ] {
        yaml += &namespace(ns, ambient);
        yaml += &idle_pod(ns, "client", "node1", "default");
        yaml += &echo_pod(ns, "server", "node2", PORT);
        yaml += &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}, labels: {service_labels}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: {PORT}}}]
---
"#
        );
    }
    yaml + r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: mesh}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#
}

#[derive(Clone, Copy)]
struct Settings {
    requests: u64,
    concurrency: u64,
    rate: u64,
    seconds: u64,
}

/// The processes on one path, besides the client.
struct PathProcesses {
    /// The echo server.
    server: i32,
    /// Both ztunnels and the waypoint (the L7 path only).
    proxies: Vec<i32>,
}

impl PathProcesses {
    fn cpu(pids: &[i32]) -> f64 {
        pids.iter()
            .map(|p| proc_usage(*p).expect("process of the path").cpu_seconds)
            .sum()
    }
}

/// One measured run: the load report and the CPU it cost.
struct Measured {
    report: LoadReport,
    /// CPU seconds of every process on the path together.
    path_cpu: f64,
    /// CPU seconds of the proxies only.
    proxy_cpu: f64,
}

impl Measured {
    /// Requests per CPU second of the whole path: requests per second per core.
    fn per_core(&self) -> f64 {
        self.report.requests as f64 / self.path_cpu
    }

    /// Cores the proxies kept busy while the requests ran.
    fn proxy_cores(&self) -> f64 {
        self.proxy_cpu / (self.report.duration_ms / 1000.0)
    }
}

fn measure(
    sb: &Sandbox,
    client: &str,
    url: &str,
    procs: &PathProcesses,
    args: &[&str],
    requests: u64,
) -> Measured {
    let (server_before, proxies_before) = (
        PathProcesses::cpu(&[procs.server]),
        PathProcesses::cpu(&procs.proxies),
    );
    let client_before = children_cpu_seconds();
    let n = requests.to_string();
    let mut load_args = vec!["--url", url, "-n", &n, "--timeout-ms", "15000"];
    load_args.extend_from_slice(args);
    let report = sb
        .load(client, &load_args)
        .unwrap_or_else(|e| panic!("load from {client}: {e}"));
    // Includes the few milliseconds `meshctl exec` itself takes: a fixed cost, small next
    // to thousands of requests.
    let client_cpu = children_cpu_seconds() - client_before;
    let server_cpu = PathProcesses::cpu(&[procs.server]) - server_before;
    let proxy_cpu = PathProcesses::cpu(&procs.proxies) - proxies_before;
    assert_eq!(
        report.count(200),
        requests,
        "{client} → {url}: every request succeeds: {:?} {:?}",
        report.statuses,
        report.errors
    );
    Measured {
        report,
        path_cpu: client_cpu + server_cpu + proxy_cpu,
        proxy_cpu,
    }
}

/// Results of one path and protocol.
struct Row {
    rps: f64,
    rps_per_core: f64,
    proxy_cores: f64,
    p50: f64,
    p99: f64,
}

fn run(sb: &Sandbox, ns: &str, http2: bool, procs: &PathProcesses, s: Settings) -> Row {
    let client = format!("{ns}/client");
    let url = format!("http://echo:{PORT}/");
    let proto: &[&str] = if http2 { &["--http2"] } else { &[] };
    let c = s.concurrency.to_string();
    let mut args = vec!["-c", c.as_str()];
    args.extend_from_slice(proto);
    // Warm up: connections, pools, certificates.
    measure(sb, &client, &url, procs, &args, (s.requests / 10).max(100));
    let throughput = measure(sb, &client, &url, procs, &args, s.requests);

    let rate = s.rate.to_string();
    let mut args = vec!["--rate", rate.as_str(), "-c", "64"];
    args.extend_from_slice(proto);
    let latency = measure(sb, &client, &url, procs, &args, s.rate * s.seconds);
    let row = Row {
        rps: throughput.report.rps,
        rps_per_core: throughput.per_core(),
        proxy_cores: throughput.proxy_cores(),
        p50: latency.report.latency_ms.p50,
        p99: latency.report.latency_ms.p99,
    };
    println!(
        "{:<8} {:<8} {:>9.0} req/s {:>8.0} req/s/core   proxies {:>4.2} cores   at {} req/s: p50 {:>7.3} ms p99 {:>7.3} ms",
        if ns == "direct" { "direct" } else { "waypoint" },
        if http2 { "HTTP/2" } else { "HTTP/1.1" },
        row.rps,
        row.rps_per_core,
        row.proxy_cores,
        s.rate,
        row.p50,
        row.p99
    );
    row
}

/// The pid of the first container of pod `namespace/name`, or of the first pod whose name
/// starts with `name-` (a Deployment's).
fn pod_pid(sb: &Sandbox, namespace: &str, name: &str) -> i32 {
    pod_pids(sb)
        .into_iter()
        .find(|(key, _)| {
            key.strip_prefix(namespace)
                .and_then(|k| k.strip_prefix('/'))
                .is_some_and(|pod| pod == name || pod.starts_with(&format!("{name}-")))
        })
        .and_then(|(_, pids)| pids.first().copied())
        .unwrap_or_else(|| panic!("no running pod {namespace}/{name}"))
}

fn waypoint_rss(pid: i32) -> f64 {
    rss_mib(pid).expect("waypoint process")
}

fn main() {
    let full = full_run();
    let s = Settings {
        requests: env_or("WAYPOINT_BENCH_REQUESTS", if full { 50_000 } else { 300 }),
        concurrency: env_or("WAYPOINT_BENCH_CONCURRENCY", 16),
        rate: env_or("WAYPOINT_BENCH_RATE", if full { 500 } else { 50 }),
        seconds: env_or("WAYPOINT_BENCH_SECS", if full { 10 } else { 1 }),
    };

    let traced = std::env::var("WAYPOINT_BENCH_TRACING").ok();
    let mut yaml = manifests();
    if let Some(percentage) = &traced {
        yaml += &tracing(percentage);
    }
    let sb = Sandbox::up(&yaml).expect("sandbox up");
    wait_ready(&sb);
    // The L7 path works end to end once the waypoint counts a request.
    let through = eventually(SETTLE, || {
        sb.http("mesh/client", &format!("http://echo:{PORT}/"))
            .is_ok()
            && sb
                .http("mesh/deploy/waypoint", "http://127.0.0.1:15020/metrics")
                .is_ok_and(|m| requests_total(&m, &[]) > 0.0)
    });
    assert!(through, "requests never went through the waypoint");

    let waypoint = pod_pid(&sb, "mesh", "waypoint");
    let ztunnels: Vec<i32> = NODES
        .iter()
        .map(|n| ztunnel_pid(&sb, n).expect("ztunnel running"))
        .collect();
    let direct = PathProcesses {
        server: pod_pid(&sb, "direct", "server"),
        proxies: Vec::new(),
    };
    let mesh = PathProcesses {
        server: pod_pid(&sb, "mesh", "server"),
        proxies: ztunnels.iter().copied().chain([waypoint]).collect(),
    };
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = waypoint_rss(waypoint);
    let collector = traced
        .is_some()
        .then(|| pod_pid(&sb, "observability", "collector"));
    let collector_cpu = || collector.map_or(0.0, |pid| PathProcesses::cpu(&[pid]));
    let collector_before = collector_cpu();

    println!(
        "HTTP pod to pod across two nodes, direct vs through ztunnel + waypoint: {} requests \
         ({} in flight) for throughput, {} req/s for {} s for latency; tracing: {}",
        s.requests,
        s.concurrency,
        s.rate,
        s.seconds,
        traced
            .as_deref()
            .map_or("off".to_owned(), |p| format!("{p} %"))
    );
    let mut ratios = Vec::new();
    for http2 in [false, true] {
        let d = run(&sb, "direct", http2, &direct, s);
        let w = run(&sb, "mesh", http2, &mesh, s);
        ratios.push((http2, d, w));
    }
    let loaded_rss = waypoint_rss(waypoint);
    println!("ratios (waypoint path / direct):");
    for (http2, d, w) in &ratios {
        println!(
            "  {:<8} req/s {:.2}x   req/s per core {:.2}x   p50 {:.2}x   p99 {:.2}x",
            if *http2 { "HTTP/2" } else { "HTTP/1.1" },
            w.rps / d.rps,
            w.rps_per_core / d.rps_per_core,
            w.p50 / d.p50,
            w.p99 / d.p99,
        );
    }
    println!("waypoint RSS: {idle_rss:.1} MiB idle, {loaded_rss:.1} MiB after the runs");
    if traced.is_some() {
        println!(
            "OTLP receiver (same two cores, not counted in the path): {:.1} CPU seconds",
            collector_cpu() - collector_before
        );
        let metrics = sb
            .http("mesh/deploy/waypoint", "http://127.0.0.1:15020/metrics")
            .unwrap_or_default();
        for line in metrics
            .lines()
            .filter(|l| l.starts_with("waypoint_trace_spans_total{"))
        {
            println!("{line}");
        }
    }
}
