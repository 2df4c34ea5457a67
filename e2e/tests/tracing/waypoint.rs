//! Spans from the waypoint (`examples/demo` with `examples/tracing`): a request api-gateway →
//! frontend → orders → payments crosses the shop's waypoint three times, and the receiver gets
//! one trace whose spans link hop to hop; a B3-only caller keeps its trace id end to end;
//! sampling at 10 % is decided once per trace; a Telemetry bound to one Service turns off its
//! access log lines and relabels its metrics; the provider switched to OTLP/HTTP keeps traces
//! coming; a collector that is gone costs requests nothing and its spans are counted as failed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::examples::{folder as example, yaml as example_yaml};
use e2e::mesh::wait_ready;
use e2e::metrics::metric_sum;
use e2e::traces::{ReceivedSpan, by_trace, received_spans, receiver_stats};
use e2e::{SETTLE, Sandbox, eventually};
use meshctl::app::echo_reply::EchoReply;

/// The receiver, as pods in the shop reach it.
const RECEIVER: &str = "http://otel-collector.observability:4317";
/// The caller of the chain.
const CLIENT: &str = "shop/deploy/api-gateway";
/// The first service of the chain.
const FRONTEND: &str = "http://frontend:8080/";
/// The waypoint pod.
const WAYPOINT: &str = "shop/deploy/waypoint";
/// Spans of one request through the chain: a server and a client span per waypoint hop.
const SPANS_PER_TRACE: usize = 6;
/// The hops, in order.
const HOPS: [&str; 3] = ["frontend", "orders", "payments"];

/// A fresh id of `n` hex digits (never all zero).
fn fresh_hex(n: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{:032x}", nanos | 1)[32 - n..].to_owned()
}

/// The demo with tracing (the mesh-wide Telemetry at `percentage`), once a sampled request
/// through the chain yields its six spans.
fn up(percentage: &str) -> Sandbox {
    let sb = Sandbox::up(&example("demo").display().to_string()).expect("sandbox up");
    wait_ready(&sb);
    let tracing = example_yaml("tracing").replace(
        "randomSamplingPercentage: 100.0",
        &format!("randomSamplingPercentage: {percentage}"),
    );
    sb.apply(&tracing).expect("applying examples/tracing");
    let mut last = String::new();
    let traced = eventually(Duration::from_secs(60), || {
        let trace = fresh_hex(32);
        let tp = format!("00-{trace}-{}-01", fresh_hex(16));
        match call(&sb, &[("traceparent", &tp)]) {
            Ok(_) => spans_of(&sb, &trace, Duration::from_secs(5)).is_some(),
            Err(e) => {
                last = e;
                false
            }
        }
    });
    assert!(
        traced,
        "no trace through the chain: {last}\n{}",
        waypoint_log(&sb, 30)
    );
    sb
}

/// One request from the api-gateway to the frontend with `headers`; the frontend's reply.
fn call(sb: &Sandbox, headers: &[(&str, &str)]) -> Result<EchoReply, String> {
    let pairs: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let mut args = vec!["meshctl", "app", "curl", "--fail", "--timeout-ms", "5000"];
    for p in &pairs {
        args.extend(["-H", p.as_str()]);
    }
    args.push(FRONTEND);
    let out = sb.exec(CLIENT, &args).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("not an echo reply: {e}"))
}

/// The spans of `trace` once all six arrived within `limit`.
fn spans_of(sb: &Sandbox, trace: &str, limit: Duration) -> Option<Vec<ReceivedSpan>> {
    let mut found = Vec::new();
    eventually(limit, || {
        found = received_spans(sb, CLIENT, RECEIVER)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.trace_id == trace)
            .collect();
        found.len() >= SPANS_PER_TRACE
    })
    .then_some(found)
}

fn waypoint_log(sb: &Sandbox, lines: usize) -> String {
    let out = sb
        .command()
        .args([
            "logs",
            "-n",
            "shop",
            "deploy/waypoint",
            "--tail",
            &lines.to_string(),
        ])
        .output();
    out.map_or_else(
        |e| format!("(no log: {e})"),
        |o| String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn waypoint_metric(sb: &Sandbox, name: &str, labels: &[(&str, &str)]) -> f64 {
    sb.http(WAYPOINT, "http://127.0.0.1:15020/metrics")
        .map_or(-1.0, |text| metric_sum(&text, name, labels))
}

fn host(service: &str) -> String {
    format!("{service}.shop.svc.cluster.local")
}

/// The one span of `spans` of `kind` for `service`.
fn span<'s>(spans: &'s [ReceivedSpan], kind: &str, service: &str) -> &'s ReceivedSpan {
    let name = match kind {
        "SPAN_KIND_SERVER" => format!("{}:8080/*", host(service)),
        _ => format!("router outbound|8080||{} egress", host(service)),
    };
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == kind && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} span {name:?} in {spans:#?}");
    found[0]
}

/// Asserts that `spans` are the six spans of one request through the chain, the first server
/// span a child of `parent` (empty: a root), each hop's server span a child of the previous
/// hop's client span.
fn assert_chain(spans: &[ReceivedSpan], parent: &str) {
    assert_eq!(spans.len(), SPANS_PER_TRACE, "{spans:#?}");
    let mut caller = parent.to_owned();
    for hop in HOPS {
        let server = span(spans, "SPAN_KIND_SERVER", hop);
        let client = span(spans, "SPAN_KIND_CLIENT", hop);
        assert_eq!(server.parent_span_id, caller, "{hop}: server span's parent");
        assert_eq!(
            client.parent_span_id, server.span_id,
            "{hop}: client span's parent"
        );
        assert_eq!(server.service_name, "waypoint.shop");
        assert_eq!(
            server
                .attributes
                .get("http.status_code")
                .map(String::as_str),
            Some("200")
        );
        assert!(server.start_time_unix_nano <= client.start_time_unix_nano);
        caller = client.span_id.clone();
    }
}

/// The reply's nested upstream replies: frontend's, orders', payments'.
fn chain_headers(reply: &EchoReply, name: &str) -> Vec<Option<String>> {
    let orders = reply.upstream.as_ref().expect("orders' reply");
    let payments = &orders["upstream"];
    vec![
        reply.headers.get(name).cloned(),
        orders["headers"][name].as_str().map(str::to_owned),
        payments["headers"][name].as_str().map(str::to_owned),
    ]
}

#[test]
fn one_trace_across_every_hop_b3_kept_per_service_telemetry_and_a_gone_collector() {
    let sb = up("100.0");

    // W3C: the caller's trace is continued at every hop, each span linked to the one before.
    let (trace, parent) = (fresh_hex(32), fresh_hex(16));
    let tp = format!("00-{trace}-{parent}-01");
    let reply = call(&sb, &[("traceparent", &tp)]).expect("request through the chain");
    let seen = chain_headers(&reply, "traceparent");
    assert!(
        seen.iter()
            .all(|t| t.as_deref().is_some_and(|t| t.contains(&trace))),
        "every app sees the trace: {seen:?}"
    );
    let spans = spans_of(&sb, &trace, SETTLE).expect("six spans of the trace");
    assert_chain(&spans, &parent);
    // Each app saw the waypoint's client span of its hop as its parent.
    for (hop, t) in HOPS.iter().zip(&seen) {
        let client = span(&spans, "SPAN_KIND_CLIENT", hop);
        assert_eq!(&t.as_deref().unwrap()[36..52], client.span_id, "{hop}");
    }

    // B3 only, 64-bit trace id: kept as the apps see it, padded in the spans.
    let b3 = fresh_hex(16);
    let reply = call(
        &sb,
        &[
            ("x-b3-traceid", &b3),
            ("x-b3-spanid", &fresh_hex(16)),
            ("x-b3-sampled", "1"),
        ],
    )
    .expect("B3 request through the chain");
    let seen = chain_headers(&reply, "x-b3-traceid");
    assert_eq!(
        seen,
        vec![Some(b3.clone()); 3],
        "the B3 trace id end to end"
    );
    let padded = format!("{}{b3}", "0".repeat(16));
    let spans = spans_of(&sb, &padded, SETTLE).expect("six spans of the B3 trace");
    assert_eq!(spans.len(), SPANS_PER_TRACE);

    // A Telemetry bound to payments: its access log lines stop, its request count gets a
    // label; the other services keep theirs.
    sb.apply(
        r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: payments-quiet, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: payments}]
  accessLogging: [{disabled: true}]
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {team: {operation: UPSERT, value: "'payments-team'"}}
"#,
    )
    .expect("applying the Telemetry");
    let relabeled = || {
        let labels = [
            ("destination_service", host("payments")),
            ("team", "payments-team".into()),
        ];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        waypoint_metric(&sb, "istio_requests_total", &labels)
    };
    let mut marker = String::new();
    let applied = eventually(SETTLE, || {
        marker = fresh_hex(32);
        let tp = format!("00-{marker}-{}-01", fresh_hex(16));
        call(&sb, &[("traceparent", &tp)]).is_ok() && relabeled() > 0.0
    });
    assert!(
        applied,
        "payments' requests relabeled\n{}",
        waypoint_log(&sb, 30)
    );
    let lines_of = |trace: &str| -> Vec<String> {
        waypoint_log(&sb, 400)
            .lines()
            .filter(|l| l.contains(&format!("trace_id={trace}")))
            .map(str::to_owned)
            .collect()
    };
    let mut lines = Vec::new();
    eventually(SETTLE, || {
        lines = lines_of(&marker);
        lines.len() >= 2
    });
    assert_eq!(
        lines.len(),
        2,
        "frontend's and orders' lines only: {lines:#?}"
    );
    for (line, hop) in lines.iter().zip(["orders", "frontend"]) {
        assert!(
            line.contains(&format!("dst.service=\"{}\"", host(hop))),
            "{line}"
        );
    }
    assert!(lines.iter().all(|l| !l.contains(&host("payments"))));

    // The provider switched to OTLP/HTTP (its `http` block, as Istio has it): the next traces
    // arrive whole, POSTed to /v1/traces.
    let http_before = receiver_stats(&sb, CLIENT, RECEIVER)
        .expect("receiver counters")
        .http_batches_received;
    let mesh_config = example_yaml("tracing");
    let config_map = mesh_config
        .split("\n---\n")
        .find(|doc| doc.contains("kind: ConfigMap"))
        .expect("the mesh config of examples/tracing")
        .replace(
            "        port: 4317\n",
            "        port: 4317\n        http: {path: /v1/traces, timeout: 5s}\n",
        );
    sb.apply(&config_map).expect("the OTLP/HTTP provider");
    let mut over_http = 0;
    let arrived = eventually(SETTLE, || {
        let trace = fresh_hex(32);
        let tp = format!("00-{trace}-{}-01", fresh_hex(16));
        over_http = receiver_stats(&sb, CLIENT, RECEIVER)
            .map(|s| s.http_batches_received)
            .unwrap_or_default();
        call(&sb, &[("traceparent", &tp)]).is_ok()
            && spans_of(&sb, &trace, Duration::from_secs(5)).is_some()
            && over_http > http_before
    });
    assert!(
        arrived,
        "traces over OTLP/HTTP: {over_http} batches (before: {http_before})\n{}",
        waypoint_log(&sb, 30)
    );

    // The collector gone: requests are answered as before, the spans counted as failed.
    let failed = || waypoint_metric(&sb, "waypoint_trace_spans_total", &[("result", "failed")]);
    let before = failed();
    let collector = std::fs::read_to_string(example("tracing").join("10-otel-collector.yaml"))
        .expect("the collector's manifests");
    let deployment = collector
        .split("\n---\n")
        .find(|doc| doc.contains("kind: Deployment"))
        .expect("the collector's Deployment");
    sb.delete(deployment).expect("deleting the collector");
    let report = sb
        .load(CLIENT, &["--url", FRONTEND, "-n", "20", "-c", "2"])
        .expect("load through the chain");
    assert_eq!(report.count(200), 20, "{report:?}");
    assert!(
        eventually(SETTLE, || failed()
            >= before + 20.0 * SPANS_PER_TRACE as f64),
        "spans counted as failed: {} (before: {before})",
        failed()
    );
}

#[test]
fn sampling_at_10_percent_is_decided_once_per_trace() {
    let sb = up("10.0");
    let before: Vec<String> = by_trace(&received_spans(&sb, CLIENT, RECEIVER).expect("spans"))
        .into_keys()
        .collect();
    let report = sb
        .load(CLIENT, &["--url", FRONTEND, "-n", "2000", "-c", "8"])
        .expect("load through the chain");
    assert_eq!(report.count(200), 2000, "{report:?}");
    // The export queue is first in, first out: once a sampled marker sent last has all its
    // spans at the receiver, every span of the load has been exported before it.
    let marker = fresh_hex(32);
    let tp = format!("00-{marker}-{}-01", fresh_hex(16));
    call(&sb, &[("traceparent", &tp)]).expect("marker request");
    spans_of(&sb, &marker, SETTLE).expect("the marker's spans");
    let lost = waypoint_metric(&sb, "waypoint_trace_spans_total", &[("result", "dropped")])
        + waypoint_metric(&sb, "waypoint_trace_spans_total", &[("result", "failed")]);
    assert_eq!(lost, 0.0, "no span lost on the way");

    let traces = by_trace(&received_spans(&sb, CLIENT, RECEIVER).expect("spans"));
    let sampled: Vec<_> = traces
        .iter()
        .filter(|(id, _)| **id != marker && !before.contains(id))
        .collect();
    for (id, spans) in &sampled {
        assert_chain(spans, "");
        assert!(spans.iter().all(|s| &s.trace_id == *id));
    }
    eprintln!("{} of 2000 requests sampled", sampled.len());
    // Binomial(2000, 0.1): 200 expected, 60 is about four standard deviations.
    assert!(
        (140..=260).contains(&sampled.len()),
        "{} of 2000 requests sampled",
        sampled.len()
    );
}
