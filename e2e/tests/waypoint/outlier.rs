//! Outlier detection (`examples/l7/outlier`) judges endpoints by their own failures only: a
//! failing endpoint is ejected, until the DestinationRule asking for it goes away; clients
//! sending malformed requests never eject a healthy one.

use e2e::metrics::metric_sum;
use e2e::{SETTLE, Sandbox, eventually};

use super::shop::{
    self, CLIENT, apply_example, example, load, replies_from, served, served_settled,
    waypoint_config_dump, waypoint_log, waypoint_log_tail, waypoint_metrics,
};
use super::{explain, url};

/// The DestinationRule of the outlier example (3 consecutive 5xx eject for 5 minutes, at most
/// half of the endpoints).
fn destination_rule() -> String {
    let file = example("outlier").join("30-outlier-detection.yaml");
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Sends the faulty pod its share until it is ejected: a whole batch passes without it
/// seeing a request.
fn wait_for_ejection(sb: &Sandbox) {
    // The faulty pod first takes its share (its 503s are retried elsewhere), then is ejected.
    let reached = eventually(SETTLE, || {
        load(sb, CLIENT, &url("/"), 30, &["-c", "2"]);
        served(sb, "orders-faulty") > 0
    });
    assert!(
        reached,
        "the faulty endpoint joins orders\n{}",
        waypoint_log(sb)
    );
    let ejected = eventually(SETTLE, || {
        let before = served_settled(sb, "orders-faulty");
        load(sb, CLIENT, &url("/"), 30, &["-c", "2"]);
        served_settled(sb, "orders-faulty") == before
    });
    assert!(
        ejected,
        "the faulty endpoint is never ejected\n{}",
        waypoint_log(sb)
    );
}

#[test]
fn outlier_detection_ejects_the_failing_endpoint_until_the_destination_rule_is_deleted() {
    let sb = shop::up();
    apply_example(&sb, "outlier");
    wait_for_ejection(&sb);

    let before = served_settled(&sb, "orders-faulty");
    let report = load(&sb, CLIENT, &url("/"), 100, &["-c", "2"]);
    assert_eq!(
        report.count(200),
        100,
        "{}",
        explain(&sb, "healthy endpoints serve all", &report)
    );
    assert_eq!(replies_from(&report, "orders-faulty"), 0);
    assert_eq!(
        served_settled(&sb, "orders-faulty"),
        before,
        "no request reaches the ejected endpoint"
    );

    // Without the DestinationRule there is no outlier detection: the faulty endpoint is back
    // in rotation long before its five minutes of ejection are over.
    sb.delete(&destination_rule())
        .expect("deleting the DestinationRule");
    let back = eventually(SETTLE, || {
        load(&sb, CLIENT, &url("/"), 30, &["-c", "2"]);
        served(&sb, "orders-faulty") > before
    });
    assert!(
        back,
        "the faulty endpoint stays ejected without outlier detection\n{}",
        waypoint_log(&sb)
    );
}

/// Malformed requests sent from the client pod.
const MALFORMED: usize = 20;

/// Sends [`MALFORMED`] POSTs with a broken chunked body (`zz` is no chunk size) from the
/// client pod, one connection each, with bash's `/dev/tcp` (the capture takes it like any
/// application's connection); the status line of each answer.
fn send_malformed_chunked(sb: &Sandbox) -> Vec<String> {
    let script = format!(
        "for i in $(seq {MALFORMED}); do \
           exec 3<>/dev/tcp/orders/8080 || {{ echo 'no connection'; continue; }}; \
           printf 'POST / HTTP/1.1\\r\\nHost: orders:8080\\r\\nTransfer-Encoding: chunked\\r\\n\
Connection: close\\r\\n\\r\\nzz\\r\\nabc\\r\\n0\\r\\n\\r\\n' >&3; \
           timeout 10 head -n 1 <&3 || echo 'no answer'; \
           exec 3<&-; \
         done"
    );
    let out = sb
        .exec(CLIENT, &["bash", "-c", &script])
        .expect("running bash in the client pod");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn malformed_request_bodies_are_answered_400_dpe_and_never_eject_a_healthy_endpoint() {
    let sb = shop::up();
    sb.apply(&destination_rule())
        .expect("applying the DestinationRule");
    let detecting = eventually(SETTLE, || {
        waypoint_config_dump(&sb).is_some_and(|d| d.contains("consecutive_5xx_errors: 3"))
    });
    assert!(
        detecting,
        "the waypoint never got outlier detection\n{}",
        waypoint_log(&sb)
    );

    let statuses = send_malformed_chunked(&sb);
    // Both endpoints still share the traffic (three of those requests counted against one
    // would have ejected it).
    let report = load(&sb, CLIENT, &url("/"), 40, &["-c", "2"]);
    assert_eq!(
        report.count(200),
        40,
        "{}",
        explain(&sb, "every request succeeds", &report)
    );
    for version in ["orders-v1", "orders-v2"] {
        assert!(
            replies_from(&report, version) > 0,
            "{}",
            explain(&sb, &format!("{version} still answers"), &report)
        );
    }
    let rejected = statuses
        .iter()
        .filter(|s| s.starts_with("HTTP/1.1 400"))
        .count();
    assert_eq!(
        rejected,
        MALFORMED,
        "each malformed request is answered 400: {statuses:?}\n{}",
        waypoint_log(&sb)
    );
    let dpe = [
        ("destination_service_name", "orders"),
        ("response_code", "400"),
        ("response_flags", "DPE"),
    ];
    let counted = waypoint_metrics(&sb)
        .map(|m| metric_sum(&m, "istio_requests_total", &dpe))
        .unwrap_or_default();
    assert_eq!(counted, MALFORMED as f64, "istio_requests_total counts DPE");
    // The access log is written in batches: its lines may follow the answers.
    let logged = eventually(SETTLE, || {
        waypoint_log_tail(&sb, 500)
            .lines()
            .filter(|l| l.contains("request complete") && l.contains("flags=DPE"))
            .count()
            >= MALFORMED
    });
    assert!(logged, "access log:\n{}", waypoint_log_tail(&sb, 500));
}
