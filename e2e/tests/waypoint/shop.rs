//! Helpers for the waypoint scenarios: the shop of `examples/l7/base` in a sandbox, its
//! scenario folders, traffic from its client pods with `meshctl app load`, the echo servers'
//! request counters and the waypoint's Prometheus metrics.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use e2e::mesh::{pod_pids, wait_ready};
use e2e::metrics::{metric_sum, requests_total};
use e2e::{Options, SETTLE, Sandbox, eventually, json};
use meshctl::app::load_report::LoadReport;

/// Namespace of the shop.
pub const NS: &str = "shop";
/// The waypoint Gateway's name (also its Deployment's).
pub const WAYPOINT: &str = "waypoint";
/// The client pod (service account `client`).
pub const CLIENT: &str = "shop/client";
/// The api-gateway pod (service account `api-gateway`).
pub const API_GATEWAY: &str = "shop/deploy/api-gateway";
/// The orders Service as the clients call it.
pub const ORDERS: &str = "http://orders:8080";
/// The waypoint's Prometheus endpoint, inside its pod.
const METRICS_URL: &str = "http://127.0.0.1:15020/metrics";
/// The waypoint's config dump, inside its pod.
const CONFIG_DUMP_URL: &str = "http://127.0.0.1:15000/config_dump";
/// The waypoint's readiness endpoint, inside its pod.
const READY_URL: &str = "http://127.0.0.1:15021/healthz/ready";

/// A folder of `examples/l7`.
pub fn example(folder: &str) -> PathBuf {
    e2e::examples::folder(&format!("l7/{folder}"))
}

/// The manifests of an `examples/l7` folder as one YAML text.
pub fn example_yaml(folder: &str) -> String {
    e2e::examples::yaml(&format!("l7/{folder}"))
}

/// `meshctl apply` of an example folder.
pub fn apply_example(sb: &Sandbox, folder: &str) {
    sb.apply(&example_yaml(folder))
        .unwrap_or_else(|e| panic!("applying examples/l7/{folder}: {e}"));
}

/// The last lines of the waypoint's log, for failure messages.
pub fn waypoint_log(sb: &Sandbox) -> String {
    waypoint_log_tail(sb, 40)
}

/// The last `lines` lines of the waypoint's log (its access log among them).
pub fn waypoint_log_tail(sb: &Sandbox, lines: usize) -> String {
    let out = sb
        .command()
        .args([
            "logs",
            "-n",
            NS,
            &format!("deploy/{WAYPOINT}"),
            "--tail",
            &lines.to_string(),
        ])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(no log: {e})"),
    }
}

/// Runs `meshctl app curl` in `pod`; the body on success.
fn curl_in(sb: &Sandbox, pod: &str, url: &str) -> Option<String> {
    let out = sb.try_http(pod, url, 3000).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The waypoint pod, as `namespace/deploy/name` for `Sandbox::exec`.
fn waypoint_pod() -> String {
    format!("{NS}/deploy/{WAYPOINT}")
}

/// The waypoint's `/config_dump` text, or `None` while it does not answer.
pub fn waypoint_config_dump(sb: &Sandbox) -> Option<String> {
    curl_in(sb, &waypoint_pod(), CONFIG_DUMP_URL)
}

/// The waypoint's `/metrics` text, or `None` while it does not answer.
pub fn waypoint_metrics(sb: &Sandbox) -> Option<String> {
    curl_in(sb, &waypoint_pod(), METRICS_URL)
}

/// Builds a sandbox from `examples/l7/base` and waits until the ztunnels are ready, the
/// waypoint pod is ready and requests to orders pass through the waypoint.
pub fn up() -> Sandbox {
    up_with(Options::default())
}

/// [`up`], with `options`.
pub fn up_with(options: Options) -> Sandbox {
    let sb = Sandbox::up_with(&example("base").display().to_string(), options).expect("sandbox up");
    wait_ready(&sb);
    let mut failed = false;
    let ready = eventually(SETTLE, || {
        let pods = sb.pods().unwrap_or_default();
        let waypoints: Vec<_> = pods
            .iter()
            .filter(|p| {
                p.namespace == NS
                    && p.labels.get("gateway.networking.k8s.io/gateway-name")
                        == Some(&WAYPOINT.to_string())
            })
            .collect();
        // A crashed waypoint will not recover: stop waiting.
        failed = waypoints.iter().any(|p| p.phase == "Failed");
        failed
            || (waypoints.iter().any(|p| p.ready)
                && curl_in(&sb, &waypoint_pod(), READY_URL).is_some())
    });
    assert!(
        ready && !failed,
        "the waypoint never became ready{}\n--- waypoint log\n{}",
        if failed { " (it exited)" } else { "" },
        waypoint_log(&sb)
    );
    // Traffic reaches orders through the waypoint once the ztunnels know it: the waypoint
    // then counts the request.
    let through = eventually(SETTLE, || {
        curl_in(&sb, CLIENT, &format!("{ORDERS}/")).is_some()
            && waypoint_metrics(&sb).is_some_and(|m| requests_total(&m, &[]) > 0.0)
    });
    assert!(
        through,
        "requests to orders never went through the waypoint\n--- waypoint log\n{}",
        waypoint_log(&sb)
    );
    sb
}

/// The waypoint's pod name (its Deployment's only replica).
pub fn waypoint_pod_name(sb: &Sandbox) -> String {
    pod_pids(sb)
        .into_keys()
        .find_map(|pod| {
            pod.strip_prefix(&format!("{NS}/"))
                .filter(|name| name.starts_with(&format!("{WAYPOINT}-")))
                .map(str::to_owned)
        })
        .expect("the waypoint's pod")
}

/// The waypoint's process.
pub fn waypoint_pid(sb: &Sandbox) -> i32 {
    pod_pids(sb)[&format!("{NS}/{}", waypoint_pod_name(sb))][0]
}

/// Runs `meshctl app load --json` in `pod` against `url` with `extra` arguments.
pub fn load(sb: &Sandbox, pod: &str, url: &str, requests: u64, extra: &[&str]) -> LoadReport {
    let n = requests.to_string();
    let mut args = vec!["--url", url, "-n", &n, "--timeout-ms", "15000"];
    args.extend_from_slice(extra);
    sb.load(pod, &args)
        .unwrap_or_else(|e| panic!("load from {pod} failed: {e}"))
}

/// The Deployment a pod belongs to, from its name (`<deployment>-<hash>-<suffix>`).
pub fn deployment_of(pod: &str) -> String {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    match parts.as_slice() {
        [_, _, deployment] => deployment.to_string(),
        _ => pod.to_string(),
    }
}

/// Replies per Deployment (`orders-v1`, `orders-v2`, ...), whatever their status.
pub fn by_deployment(report: &LoadReport) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (pod, n) in &report.by_pod {
        *out.entry(deployment_of(pod)).or_default() += n;
    }
    out
}

/// Replies from Deployment `deployment` in `report`.
pub fn replies_from(report: &LoadReport, deployment: &str) -> u64 {
    by_deployment(report)
        .get(deployment)
        .copied()
        .unwrap_or_default()
}

/// Requests served so far by the (single) pod of `deployment`, from its echo counter.
pub fn served(sb: &Sandbox, deployment: &str) -> u64 {
    let pod = format!("{NS}/deploy/{deployment}");
    let body = curl_in(sb, &pod, "http://127.0.0.1:8080/_echo/stats")
        .unwrap_or_else(|| panic!("{deployment}: /_echo/stats did not answer"));
    json(&body)["requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("{deployment}: bad stats {body}"))
}

/// [`served`] once it stops changing: copies still on their way (mirrors, retries of earlier
/// requests) have landed. Polls every second; never asserts how long that takes.
pub fn served_settled(sb: &Sandbox, deployment: &str) -> u64 {
    let mut last = served(sb, deployment);
    let mut value = last;
    let settled = eventually(SETTLE, || {
        std::thread::sleep(Duration::from_secs(1));
        value = served(sb, deployment);
        let same = value == last;
        last = value;
        same
    });
    assert!(settled, "{deployment} kept serving requests nobody sent");
    value
}

/// The waypoint's request metrics for one destination service, as numbers to compare before
/// and after a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RequestCounts {
    /// `istio_requests_total`.
    pub requests: f64,
    /// `istio_requests_total` with `response_code="200"`.
    pub ok: f64,
    /// `istio_request_duration_milliseconds_count`.
    pub durations: f64,
    /// `istio_request_bytes_count`.
    pub request_sizes: f64,
    /// `istio_response_bytes_count`.
    pub response_sizes: f64,
}

impl RequestCounts {
    /// Reads the counts for requests to Service `service` (its short name) from the waypoint.
    pub fn read(sb: &Sandbox, service: &str) -> RequestCounts {
        let text = waypoint_metrics(sb).expect("the waypoint's /metrics answers");
        let f = [("destination_service_name", service)];
        let ok = [
            ("destination_service_name", service),
            ("response_code", "200"),
        ];
        RequestCounts {
            requests: metric_sum(&text, "istio_requests_total", &f),
            ok: metric_sum(&text, "istio_requests_total", &ok),
            durations: metric_sum(&text, "istio_request_duration_milliseconds_count", &f),
            request_sizes: metric_sum(&text, "istio_request_bytes_count", &f),
            response_sizes: metric_sum(&text, "istio_response_bytes_count", &f),
        }
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &RequestCounts) -> RequestCounts {
        RequestCounts {
            requests: self.requests - before.requests,
            ok: self.ok - before.ok,
            durations: self.durations - before.durations,
            request_sizes: self.request_sizes - before.request_sizes,
            response_sizes: self.response_sizes - before.response_sizes,
        }
    }
}

#[test]
fn pods_belong_to_the_deployment_their_name_starts_with() {
    assert_eq!(deployment_of("orders-v1-96gzr5vggh-gp5pw"), "orders-v1");
    assert_eq!(deployment_of("client"), "client");
}

/// The row of `meshctl stat -o json`'s `report` named `name`.
pub fn stat_row(report: &serde_json::Value, name: &str) -> Option<serde_json::Value> {
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    rows.into_iter().find(|r| r["name"] == name)
}

/// What `stat deploy -n shop` must show whatever it is measured from, once `sent` (good and
/// failed requests per orders Deployment) have been counted: each version's success rate as
/// its failures give it, one meshed pod, all on mutual TLS, a latency; nothing invented for
/// the api-gateway nobody calls; no proxy missing.
pub fn assert_stat_figures(report: &serde_json::Value, sent: impl Fn(&str) -> (u64, u64)) {
    for deployment in ["orders-v1", "orders-v2"] {
        let (good, bad) = sent(deployment);
        let row = stat_row(report, deployment).unwrap_or_else(|| panic!("no row {deployment}"));
        let success = row["success_rate"].as_f64().unwrap();
        let expected = good as f64 / (good + bad) as f64;
        assert!((success - expected).abs() < 1e-9, "{deployment}: {row}");
        assert_eq!(row["meshed_pods"], 1, "{row}");
        // A ratio of two of Prometheus's extrapolated increases can miss 1.0 by a rounding.
        let mtls = row["mtls_share"].as_f64().unwrap_or_default();
        assert!(
            (mtls - 1.0).abs() < 1e-9,
            "the waypoint reaches it over HBONE: {row}"
        );
        assert!(row["latency_ms_p50"].as_f64().unwrap() > 0.0, "{row}");
    }
    let idle = stat_row(report, "api-gateway").expect("an api-gateway row");
    assert!(idle["requests"].is_null(), "{idle}");
    assert_eq!(report["unreachable"], serde_json::json!([]), "{report}");
}
