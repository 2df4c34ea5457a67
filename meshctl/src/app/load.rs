//! `meshctl app load`: sends many requests with bounded concurrency and
//! reports status counts, latency percentiles and which pods answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::client::{Connection, MAX_BODY, Reply, RequestTemplate, with_timeout};
use super::error::AppError;
use super::http_echo::POD_HEADER;
use super::load_report::{LoadReport, Tally};

/// Arguments of `meshctl app load`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// URL to send requests to (http:// only).
    #[arg(long)]
    pub url: String,
    /// Total number of requests.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub requests: u64,
    /// Most requests in flight at once (one connection each).
    #[arg(short = 'c', long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Fixed total request rate per second (default: as fast as possible).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Use HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    pub http2: bool,
    /// Extra request header "name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request method (default GET, or POST with --data).
    #[arg(short = 'X', long, visible_alias = "request")]
    pub method: Option<String>,
    /// Request body.
    #[arg(short = 'd', long)]
    pub data: Option<String>,
    /// Deadline per request, connecting included, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Open a new connection for every request, so L4 (per-connection) load
    /// balancing shows across requests.
    #[arg(long)]
    pub new_conn: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// What a load run does, resolved from [`LoadArgs`].
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The request to send.
    pub template: RequestTemplate,
    /// How many times.
    pub requests: u64,
    /// Most in flight at once.
    pub concurrency: usize,
    /// Fixed requests per second, if any.
    pub rate: Option<f64>,
    /// Deadline per request in milliseconds.
    pub timeout_ms: u64,
    /// A fresh connection per request.
    pub new_conn: bool,
}

impl LoadPlan {
    /// Validates the arguments into a plan.
    pub fn from_args(args: &LoadArgs) -> Result<Self, AppError> {
        let template = RequestTemplate::new(
            &args.url,
            args.method.as_deref(),
            &args.headers,
            args.data.as_deref(),
            args.http2,
        )?;
        Ok(LoadPlan {
            template,
            requests: args.requests,
            concurrency: args.concurrency.max(1) as usize,
            rate: args.rate,
            timeout_ms: args.timeout_ms,
            new_conn: args.new_conn,
        })
    }
}

/// Runs `load` and prints its report.
pub async fn run(args: LoadArgs) -> Result<(), AppError> {
    let report = execute(LoadPlan::from_args(&args)?).await;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(())
}

/// Sends the planned requests and measures them. Transport failures are
/// counted in the report, never returned as an error.
pub async fn execute(plan: LoadPlan) -> LoadReport {
    let workers = plan
        .concurrency
        .min(usize::try_from(plan.requests).unwrap_or(usize::MAX));
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    // Exactly `workers` tasks, each with at most one request in flight:
    // that is what bounds concurrency.
    let mut set = JoinSet::new();
    for _ in 0..workers {
        set.spawn(worker(plan.clone(), next.clone(), start));
    }
    let mut tally = Tally::default();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(worker_tally) => tally.merge(worker_tally),
            Err(e) => tally.record_error(format!("load worker failed: {e}")),
        }
    }
    tally.into_report(start.elapsed())
}

/// Takes request numbers from `next` until all are taken.
async fn worker(plan: Arc<LoadPlan>, next: Arc<AtomicU64>, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Connection> = None;
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= plan.requests {
            break;
        }
        if let Some(rate) = plan.rate {
            // Request i is due at start + i/rate, whichever worker takes it.
            tokio::time::sleep_until(start + Duration::from_secs_f64(index as f64 / rate)).await;
        }
        let began = Instant::now();
        match with_timeout(plan.timeout_ms, send(&plan, &mut conn)).await {
            Ok(reply) => {
                let pod = reply.headers.get(POD_HEADER).and_then(|v| v.to_str().ok());
                tally.record_response(reply.status, pod, began.elapsed());
                if plan.new_conn {
                    conn = None;
                }
            }
            Err(e) => {
                // The connection's state is unknown after a failure.
                conn = None;
                tally.record_error(e.to_string());
            }
        }
    }
    tally
}

/// Sends one request, reusing the worker's connection while it is usable.
async fn send(plan: &LoadPlan, conn: &mut Option<Connection>) -> Result<Reply, AppError> {
    if let Some(c) = conn.as_mut() {
        // The server may have closed an idle keep-alive connection.
        if c.is_closed() || c.ready().await.is_err() {
            *conn = None;
        }
    }
    let c = match conn {
        Some(c) => c,
        None => conn.insert(Connection::open(&plan.template.target, plan.template.http2).await?),
    };
    c.send(plan.template.build()?, MAX_BODY).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::http_echo::{EchoSettings, serve};
    use crate::app::identity::Identity;
    use clap::Parser;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadArgs,
    }

    fn plan(argv: &[&str]) -> LoadPlan {
        let cli = Cli::try_parse_from(std::iter::once("load").chain(argv.iter().copied())).unwrap();
        LoadPlan::from_args(&cli.args).unwrap()
    }

    async fn echo(pod: &str) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let identity = Identity {
            pod: pod.into(),
            namespace: "t".into(),
            version: String::new(),
        };
        tokio::spawn(serve(listener, EchoSettings::new(identity), async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[test]
    fn parses_arguments() {
        let p = plan(&[
            "--url",
            "http://svc:8080/",
            "-n",
            "7",
            "-c",
            "2",
            "-H",
            "a: b",
            "-X",
            "PUT",
        ]);
        assert_eq!((p.requests, p.concurrency), (7, 2));
        assert_eq!(p.template.method, http::Method::PUT);
        assert_eq!(p.template.headers["a"], "b");
        assert!(Cli::try_parse_from(["load", "--url", "x", "-c", "0"]).is_err());
        assert!(Cli::try_parse_from(["load", "--url", "x", "--rate", "0"]).is_err());
    }

    #[tokio::test]
    async fn counts_statuses_and_pods_against_echo() {
        let (addr, _stop) = echo("load-a").await;
        let report = execute(plan(&[
            "--url",
            &format!("http://{addr}/"),
            "-n",
            "40",
            "-c",
            "3",
        ]))
        .await;
        assert_eq!(report.requests, 40);
        assert_eq!(report.count(200), 40);
        assert_eq!(report.by_pod["load-a"], 40);
        assert!(report.errors.is_empty());
        let l = report.latency_ms;
        assert!(0.0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);

        let url = format!("http://{addr}/_echo/stats");
        let stats =
            crate::app::client::fetch(&plan(&["--url", &url]).template, 5000, MAX_BODY).await;
        let stats: serde_json::Value = serde_json::from_slice(&stats.unwrap().body).unwrap();
        assert_eq!(stats["requests"], 40);
    }

    #[tokio::test]
    async fn counts_failures_over_h2_and_new_connections() {
        let (addr, _stop) = echo("load-b").await;
        let url = format!("http://{addr}/?status=503");
        let report = execute(plan(&["--url", &url, "-n", "10", "--http2"])).await;
        assert_eq!(report.count(503), 10);
        let report = execute(plan(&["--url", &url, "-n", "10", "--new-conn"])).await;
        assert_eq!(report.count(503), 10);
        assert_eq!(report.by_pod["load-b"], 10);
    }

    #[tokio::test]
    async fn transport_errors_are_counted_not_fatal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let report = execute(plan(&["--url", &format!("http://{addr}/"), "-n", "5"])).await;
        assert_eq!(report.requests, 5);
        assert_eq!(report.statuses["error"], 5);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(report.by_pod.is_empty());
    }

    #[tokio::test]
    async fn rate_limited_run_completes_every_request() {
        let (addr, _stop) = echo("load-c").await;
        let url = format!("http://{addr}/");
        let report = execute(plan(&["--url", &url, "-n", "5", "--rate", "100"])).await;
        assert_eq!(report.count(200), 5);
    }
}
