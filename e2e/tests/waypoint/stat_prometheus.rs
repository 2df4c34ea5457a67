//! `meshctl stat --prometheus` against a real Prometheus (Debian's package): run in the
//! sandbox's control-plane network namespace, where meshctl reaches it, scraping every proxy
//! each second (the ztunnels on their nodes' addresses, the waypoint on its pod's, all on
//! :15020). The counts are Prometheus's `increase`, which extrapolates from the first and last
//! samples in the window to its edges: over a window of W seconds that adds up to two scrape
//! intervals' worth, so the test polls, with a window growing from a fixed start, until every
//! count is within 1 % of what was sent. Every series of the waypoint is sampled at the same
//! instants, so the success rates are exact whatever the window.

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::metrics::requests_total;
use e2e::{SETTLE, Sandbox, eventually};
use meshctl::sandbox::model::addresses::netns_name;
use test_support::TempDir;
use test_support::process::KillOnDrop;

use super::shop::{
    self, CLIENT, NS, ORDERS, WAYPOINT, assert_stat_figures, by_deployment, load, stat_row,
    waypoint_metrics,
};

/// Requests answered normally, and requests the echo servers are told to fail.
const OK_REQUESTS: u64 = 300;
const FAILED_REQUESTS: u64 = 30;
/// Where Prometheus listens, inside the control-plane namespace.
const PROMETHEUS_URL: &str = "http://127.0.0.1:9090";
/// How long the extrapolation may take to shrink under 1 %: at most two scrape intervals over
/// the window, so a window of about 200 s; generous on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(420);
/// Seconds of scrapes with the counts from before the load, before the load.
const FLAT_SECONDS: f64 = 4.0;
/// Every series of the shop's requests, as Prometheus stores them.
const SHOP_REQUESTS: &str = "istio_requests_total{destination_workload_namespace=\"shop\"}";

/// A Prometheus process in a sandbox's network namespace, killed and its storage removed when
/// dropped (also when the test fails).
struct Prometheus {
    netns: String,
    _process: KillOnDrop,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus in `sb`'s control-plane namespace, scraping `targets` every second.
    fn start(sb: &Sandbox, targets: &[String]) -> Self {
        let dir = TempDir::new("prometheus");
        let quoted: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: mesh\n    static_configs:\n      \
                 - targets: [{}]\n",
                quoted.join(", ")
            ),
        );
        let log = File::create(dir.join("prometheus.log")).expect("Prometheus's log file");
        let netns = netns_name(sb.name(), "control");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus (Debian package prometheus) is installed by scripts/host-packages.sh",
            );
        Self {
            netns,
            _process: KillOnDrop(child),
            dir,
        }
    }

    /// `promtool query instant` inside the namespace: each sample's labels and value, or
    /// `None` while Prometheus does not answer.
    fn query(&self, expr: &str) -> Option<Vec<(serde_json::Value, f64)>> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "promtool", "query", "instant"])
            .args(["-o", "json", PROMETHEUS_URL, expr])
            .output()
            .ok()?;
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let samples = answer.as_array()?.iter().map(|s| {
            let value = s["value"][1].as_str()?.parse().ok()?;
            Some((s["metric"].clone(), value))
        });
        samples.collect()
    }

    /// The value of a query answering one sample, if it does.
    fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr)?.as_slice() {
            [(_, value)] => Some(*value),
            _ => None,
        }
    }

    /// The end of its log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

/// What Prometheus scrapes: each node's ztunnel and the waypoint pod, on :15020.
fn proxy_targets(sb: &Sandbox) -> Vec<String> {
    let out = sb.run(&["get".into(), "nodes".into()]).expect("get nodes");
    let nodes = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut targets: Vec<String> = nodes
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(2))
        .map(|ip| format!("{ip}:15020"))
        .collect();
    let pods = sb.pods().expect("pods");
    targets.extend(
        pods.iter()
            .filter(|p| {
                p.namespace == NS
                    && p.labels.get("gateway.networking.k8s.io/gateway-name")
                        == Some(&WAYPOINT.to_owned())
            })
            .map(|p| format!("{}:15020", p.ip)),
    );
    targets
}

/// Waits until Prometheus holds the requests the waypoint counted, as it counts them now.
fn wait_scraped(sb: &Sandbox, prometheus: &Prometheus) {
    let mut seen = (None, None);
    let scraped = eventually(SETTLE, || {
        let served = waypoint_metrics(sb).map(|m| requests_total(&m, &[]));
        seen = (served, prometheus.value("sum(istio_requests_total)"));
        seen.0.is_some() && seen.0 == seen.1
    });
    assert!(
        scraped,
        "Prometheus never held the waypoint's counts (waypoint, Prometheus): {seen:?}\n{}",
        prometheus.log()
    );
}

/// Replies per deployment of `requests` requests to `path` of orders.
fn send(sb: &Sandbox, path: &str, requests: u64) -> BTreeMap<String, u64> {
    let replies = by_deployment(&load(sb, CLIENT, &format!("{ORDERS}{path}"), requests, &[]));
    assert_eq!(replies.values().sum::<u64>(), requests, "{replies:?}");
    replies
}

/// Seconds since the Unix epoch, as Prometheus's timestamps are.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64()
}

/// `meshctl stat deploy -n shop --prometheus … --window <window> -o json`.
fn stat(sb: &Sandbox, url: &str, window: Duration) -> Output {
    let window = format!("{}ms", window.as_millis());
    sb.command()
        .args(["stat", "deploy", "-n", NS, "--prometheus", url])
        .args(["--window", &window, "-o", "json"])
        .output()
        .expect("meshctl runs")
}

#[test]
fn stat_from_prometheus_counts_each_workloads_requests_and_failures() {
    let sb = shop::up();
    let targets = proxy_targets(&sb);
    assert_eq!(targets.len(), 3, "two ztunnels and a waypoint: {targets:?}");
    let prometheus = Prometheus::start(&sb, &targets);
    let up = eventually(SETTLE, || {
        prometheus.value("sum(up)") == Some(targets.len() as f64)
    });
    assert!(
        up,
        "Prometheus never scraped every proxy\n{}",
        prometheus.log()
    );

    // Every series the load counts in exists before the window starts, so the window's first
    // samples are the counts before the load.
    let (mut ok_seen, mut failed_seen) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..10 {
        if ok_seen.len() == 2 && failed_seen.len() == 2 {
            break;
        }
        ok_seen.extend(send(&sb, "/", 20));
        failed_seen.extend(send(&sb, "/?status=503", 10));
    }
    assert_eq!(
        (ok_seen.len(), failed_seen.len()),
        (2, 2),
        "both versions answer: {ok_seen:?} {failed_seen:?}"
    );
    wait_scraped(&sb, &prometheus);
    // Four seconds of scrapes of the same counts follow before the load, and the window
    // starts in their middle: after the last change, with scrapes of the same counts after
    // its start even when meshctl's queries reach Prometheus a while after it is measured.
    let (flat_since, flat_since_unix) = (Instant::now(), unix_now());
    let flat = eventually(SETTLE, || {
        prometheus
            .value(&format!("min(timestamp({SHOP_REQUESTS}))"))
            .is_some_and(|at| at > flat_since_unix + FLAT_SECONDS)
    });
    assert!(flat, "Prometheus stopped scraping\n{}", prometheus.log());
    let window_start = flat_since + Duration::from_secs_f64(FLAT_SECONDS / 2.0);

    let ok = send(&sb, "/", OK_REQUESTS);
    let failed = send(&sb, "/?status=503", FAILED_REQUESTS);
    wait_scraped(&sb, &prometheus);

    let sent = |deployment: &str| {
        let count = |replies: &BTreeMap<String, u64>| replies.get(deployment).copied();
        (count(&ok).unwrap_or(0), count(&failed).unwrap_or(0))
    };
    let within_one_percent = |report: &serde_json::Value| {
        ["orders-v1", "orders-v2"].iter().all(|deployment| {
            let (good, bad) = sent(deployment);
            let expected = (good + bad) as f64;
            stat_row(report, deployment)
                .and_then(|r| r["requests"].as_u64())
                .is_some_and(|n| (n as f64 - expected).abs() <= expected / 100.0)
        })
    };
    let mut report = serde_json::Value::Null;
    let mut last = String::new();
    let converged = eventually(CONVERGE, || {
        let out = stat(&sb, PROMETHEUS_URL, window_start.elapsed());
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        report = serde_json::from_slice(&out.stdout).unwrap_or_default();
        out.status.success() && within_one_percent(&report)
    });
    assert!(
        converged,
        "the counts never came within 1 % of {ok:?} + {failed:?}:\n{last}\n{}",
        prometheus.log()
    );
    for deployment in ["orders-v1", "orders-v2"] {
        let (good, bad) = sent(deployment);
        let row = stat_row(&report, deployment).expect("a row");
        eprintln!(
            "{deployment}: {} requests counted of {} sent, over a {:.1} s window",
            row["requests"],
            good + bad,
            report["window_seconds"].as_f64().unwrap_or_default()
        );
    }
    assert_stat_figures(&report, sent);

    // Nothing listens on port 9 there: the error names the URL and the query.
    let out = stat(&sb, "http://127.0.0.1:9", Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: Prometheus at http://127.0.0.1:9: query `sum by ("),
        "{stderr}"
    );
    assert!(
        stderr.contains("connection refused") || stderr.contains("Connection refused"),
        "{stderr}"
    );
}
