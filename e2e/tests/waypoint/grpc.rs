//! gRPC through the waypoint (`examples/l7/grpc`): `meshctl app grpc` in the client pod calls
//! the greeter Services (`meshctl app grpc-echo`, port `grpc`, appProtocol grpc): the four
//! call kinds with their messages and statuses intact, `grpc_response_status` in the
//! waypoint's metrics, the caller's deadline, a GRPCRoute sending one method to v2, and a
//! VirtualService retrying UNAVAILABLE.

use e2e::metrics::metric_sum;
use e2e::{SETTLE, Sandbox, eventually};
use meshctl::app::grpc_client::{CallKind, GrpcReport};

use super::shop::{self, CLIENT, apply_example, waypoint_log, waypoint_metrics};

/// greeter, routed by the GRPCRoute.
const GREETER: &str = "http://greeter:50051";
/// greeter-v1, retried by the VirtualService.
const GREETER_V1: &str = "http://greeter-v1:50051";
/// greeter-v2, no route of its own.
const GREETER_V2: &str = "http://greeter-v2:50051";

/// Runs `meshctl app grpc --url URL --method METHOD -o json ARGS` in the client pod: its
/// report (printed whatever the status), or why there is none.
fn grpc(sb: &Sandbox, url: &str, method: &str, extra: &[&str]) -> Result<GrpcReport, String> {
    let mut argv = vec![
        "meshctl", "app", "grpc", "--url", url, "--method", method, "-o", "json",
    ];
    argv.extend_from_slice(extra);
    let out = sb.exec(CLIENT, &argv).map_err(|e| format!("exec: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "no report ({e}), exit {:?}: {text} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// [`grpc`] that must produce a report.
fn call(sb: &Sandbox, url: &str, method: &str, extra: &[&str]) -> GrpcReport {
    grpc(sb, url, method, extra).unwrap_or_else(|e| {
        panic!(
            "grpc {url} {method} {extra:?}: {e}\n--- waypoint log\n{}",
            waypoint_log(sb)
        )
    })
}

/// The shop with the greeter applied, once a unary call to each greeter Service answers
/// through the waypoint (and the GRPCRoute sends Unary to v2).
fn up() -> Sandbox {
    let sb = shop::up();
    apply_example(&sb, "grpc");
    for (url, version) in [(GREETER_V1, "v1"), (GREETER_V2, "v2"), (GREETER, "v2")] {
        let mut last = Err(String::new());
        let ready = eventually(SETTLE, || {
            last = grpc(&sb, url, "unary", &[]);
            last.as_ref()
                .is_ok_and(|r| r.code == 0 && r.replies[0].version == version)
        });
        assert!(
            ready,
            "{url} never answered from {version}: {last:?}\n--- waypoint log\n{}",
            waypoint_log(&sb)
        );
    }
    sb
}

/// The waypoint's `istio_requests_total` for requests to `service` with `labels`.
fn requests(sb: &Sandbox, service: &str, labels: &[(&str, &str)]) -> f64 {
    let text = waypoint_metrics(sb).expect("the waypoint's /metrics answers");
    let mut filter = vec![("destination_service_name", service)];
    filter.extend_from_slice(labels);
    metric_sum(&text, "istio_requests_total", &filter)
}

/// Waits until the waypoint has counted `n` requests to `service` with `labels` (a stream is
/// counted when it ends), then asserts exactly `n`.
fn assert_counted(sb: &Sandbox, service: &str, labels: &[(&str, &str)], n: f64) {
    let mut seen = 0.0;
    let reached = eventually(SETTLE, || {
        seen = requests(sb, service, labels);
        seen >= n
    });
    assert!(
        reached && seen == n,
        "{service} {labels:?}: expected {n}, counted {seen}\n--- waypoint log\n{}",
        waypoint_log(sb)
    );
}

/// The messages of a report's replies.
fn messages(report: &GrpcReport) -> Vec<String> {
    report.replies.iter().map(|r| r.message.clone()).collect()
}

/// `hello-0` .. `hello-{n-1}`.
fn numbered(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("hello-{i}")).collect()
}

#[test]
fn every_grpc_call_kind_passes_the_waypoint_with_its_status_counted_and_deadline_kept() {
    let sb = up();
    let ok = [("grpc_response_status", "0")];
    let before_ok = requests(&sb, "greeter-v1", &ok);

    let unary = call(&sb, GREETER_V1, "unary", &["--message", "ping"]);
    assert_eq!((unary.code, unary.sent), (0, 1), "{unary:?}");
    assert_eq!(messages(&unary), ["ping"]);
    assert_eq!(unary.method, CallKind::Unary);

    let server = call(&sb, GREETER_V1, "server-stream", &["--count", "50"]);
    assert_eq!(server.code, 0, "{server:?}");
    assert_eq!(messages(&server), numbered(50));
    let indices: Vec<u32> = server.replies.iter().map(|r| r.index).collect();
    assert_eq!(indices, (0..50).collect::<Vec<_>>());

    let client = call(&sb, GREETER_V1, "client-stream", &["--count", "20"]);
    assert_eq!((client.code, client.sent), (0, 20), "{client:?}");
    assert_eq!(messages(&client), [numbered(20).join(",")]);

    // Each request is sent only after the previous reply came back: the waypoint streams
    // both ways at once.
    let bidi = call(&sb, GREETER_V1, "bidi", &["--count", "20"]);
    assert_eq!((bidi.code, bidi.sent), (0, 20), "{bidi:?}");
    assert_eq!(messages(&bidi), numbered(20));

    for report in [&unary, &server, &client, &bidi] {
        assert!(
            report.replies.iter().all(|r| r.version == "v1"),
            "{report:?}"
        );
    }
    assert_counted(&sb, "greeter-v1", &ok, before_ok + 4.0);
    assert_counted(
        &sb,
        "greeter-v1",
        &[("grpc_response_status", "0"), ("request_protocol", "grpc")],
        before_ok + 4.0,
    );

    // A failure reaches the client with its code, message and trailers (trailers-only, as
    // gRPC servers send an error before any reply), unary and mid-stream alike.
    let not_found = ["--fail-with", "5"];
    let failed = call(&sb, GREETER_V1, "unary", &not_found);
    assert_eq!(failed.code, 5, "{failed:?}");
    assert_eq!(failed.status_message, "failing with 5 as asked");
    let pod = failed
        .trailers
        .get("x-echo-pod")
        .cloned()
        .unwrap_or_default();
    assert!(pod.starts_with("greeter-v1-"), "{failed:?}");
    assert!(failed.replies.is_empty());
    let failed = call(&sb, GREETER_V1, "bidi", &not_found);
    assert_eq!((failed.code, failed.replies.len()), (5, 0), "{failed:?}");
    // Both counted with the status as Istio labels it, on HTTP 200.
    assert_counted(
        &sb,
        "greeter-v1",
        &[("grpc_response_status", "5"), ("response_code", "200")],
        2.0,
    );

    // A deadline shorter than the server's work ends the call with DEADLINE_EXCEEDED, kept
    // by the server and by the waypoint alike.
    let late = call(
        &sb,
        GREETER_V1,
        "unary",
        &["--sleep-ms", "20000", "--timeout-ms", "300"],
    );
    assert_eq!(late.code, 4, "{late:?}");
    assert!(late.replies.is_empty());
    // A server that ignores the deadline: the waypoint keeps it (Envoy's wording).
    let ignored = call(
        &sb,
        GREETER_V1,
        "unary",
        &[
            "--sleep-ms",
            "20000",
            "--timeout-ms",
            "300",
            "--server-ignores-deadline",
        ],
    );
    assert_eq!(
        (ignored.code, ignored.status_message.as_str()),
        (4, "upstream request timeout"),
        "{ignored:?}"
    );
    // Both counted with DEADLINE_EXCEEDED (the first one by whichever of the waypoint and
    // the server kept the deadline first).
    assert_counted(&sb, "greeter-v1", &[("grpc_response_status", "4")], 2.0);
    // Within the deadline, the same call succeeds.
    let in_time = call(
        &sb,
        GREETER_V1,
        "unary",
        &["--sleep-ms", "100", "--timeout-ms", "10000"],
    );
    assert_eq!(in_time.code, 0, "{in_time:?}");
}

#[test]
fn a_grpcroute_sends_one_method_to_v2_and_unavailable_is_retried() {
    let sb = up();

    // The GRPCRoute: Unary to v2, the other methods to v1.
    for _ in 0..5 {
        let unary = call(&sb, GREETER, "unary", &[]);
        assert_eq!(
            (unary.code, unary.replies[0].version.as_str()),
            (0, "v2"),
            "{unary:?}"
        );
    }
    for method in ["server-stream", "client-stream", "bidi"] {
        for _ in 0..3 {
            let report = call(&sb, GREETER, method, &["--count", "3"]);
            assert_eq!(report.code, 0, "{report:?}");
            assert!(
                !report.replies.is_empty() && report.replies.iter().all(|r| r.version == "v1"),
                "{method}: {report:?}"
            );
        }
    }

    // greeter-v1 retries UNAVAILABLE: a call failing once succeeds, answered by the retry.
    let before = requests(&sb, "greeter-v1", &[("grpc_response_status", "14")]);
    let once = |key| ["--fail-with", "14", "--fail-key", key, "--fail-times", "1"];
    let retried = call(&sb, GREETER_V1, "unary", &once("v1-once"));
    assert_eq!(retried.code, 0, "{retried:?}");
    assert_eq!(messages(&retried), ["hello"]);
    // Unless every attempt fails: three attempts (the call and 2 retries), then UNAVAILABLE.
    let thrice = [
        "--fail-with",
        "14",
        "--fail-key",
        "v1-thrice",
        "--fail-times",
        "3",
    ];
    let exhausted = call(&sb, GREETER_V1, "unary", &thrice);
    assert_eq!(exhausted.code, 14, "{exhausted:?}");
    let after_three = call(&sb, GREETER_V1, "unary", &thrice);
    assert_eq!(
        after_three.code, 0,
        "the fourth call of the key succeeds: {after_three:?}"
    );
    // The client's calls are counted once each, with their final status.
    assert_counted(
        &sb,
        "greeter-v1",
        &[("grpc_response_status", "14")],
        before + 1.0,
    );

    // greeter-v2 has no retry policy for POSTs: the same failure reaches the client.
    let unretried = call(&sb, GREETER_V2, "unary", &once("v2-once"));
    assert_eq!(unretried.code, 14, "{unretried:?}");
    assert_eq!(unretried.status_message, "failing with 14 as asked");
}
