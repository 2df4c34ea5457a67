//! WebSocket through the waypoint (`examples/l7/websocket`): `meshctl app ws` in the client
//! pod talks to the echo servers behind the orders Service (every http-echo is also a
//! WebSocket echo), with HTTP/1.1 upgrades and HTTP/2 extended CONNECT; the waypoint's
//! metrics count each upgrade once, with code 101, when its connection ends.

use e2e::metrics::metric_sum;
use e2e::{SETTLE, Sandbox, eventually};
use meshctl::app::ws_client::WsReport;

use super::shop::{self, CLIENT, apply_example, served, waypoint_log, waypoint_metrics};

/// The orders Service as a WebSocket URL.
const ORDERS_WS: &str = "ws://orders:8080";
/// Bytes per message of the echo runs.
const MESSAGE_SIZE: u64 = 64;
/// A client frame of up to 125 bytes: 2 bytes of head and a 4-byte mask.
const CLIENT_FRAME_OVERHEAD: u64 = 6;
/// A server frame of up to 125 bytes: 2 bytes of head.
const SERVER_FRAME_OVERHEAD: u64 = 2;
/// A close frame's payload: its code.
const CLOSE_PAYLOAD: u64 = 2;

/// How `meshctl app ws` failed: its exit code and stderr.
#[derive(Debug)]
struct WsFailure {
    code: Option<i32>,
    stderr: String,
}

/// Runs `meshctl app ws ORDERS_WS+path ARGS` in the client pod: its report, or how it failed.
fn ws(sb: &Sandbox, path: &str, extra: &[&str]) -> Result<WsReport, WsFailure> {
    let url = format!("{ORDERS_WS}{path}");
    let mut argv = vec!["meshctl", "app", "ws", url.as_str()];
    argv.extend_from_slice(extra);
    let out = sb.exec(CLIENT, &argv).expect("running meshctl app ws");
    if !out.status.success() {
        return Err(WsFailure {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("ws report is not JSON ({e}): {text}")))
}

/// [`ws`] that must succeed.
fn ws_ok(sb: &Sandbox, path: &str, extra: &[&str]) -> WsReport {
    ws(sb, path, extra).unwrap_or_else(|failure| {
        panic!(
            "ws {path} {extra:?} failed: {failure:?}\n--- waypoint log\n{}",
            waypoint_log(sb)
        )
    })
}

/// The waypoint's sum of `metric` over requests to orders answered with `code`.
fn orders_metric(sb: &Sandbox, metric: &str, code: &str) -> f64 {
    let text = waypoint_metrics(sb).expect("the waypoint's /metrics answers");
    metric_sum(
        &text,
        metric,
        &[
            ("destination_service_name", "orders"),
            ("response_code", code),
        ],
    )
}

/// Waits until the waypoint has recorded `n` upgrades to orders (each when its relay ended).
fn wait_for_upgrades(sb: &Sandbox, n: f64) {
    let mut seen = 0.0;
    let recorded = eventually(SETTLE, || {
        seen = orders_metric(sb, "istio_requests_total", "101");
        seen >= n
    });
    assert!(
        recorded && seen == n,
        "expected {n} upgrades recorded, saw {seen}\n--- waypoint log\n{}",
        waypoint_log(sb)
    );
}

#[test]
fn websocket_echoes_both_ways_and_is_counted_with_code_101() {
    let sb = shop::up();

    // HTTP/1.1 upgrade: 1000 messages each way, then the client closes.
    let report = ws_ok(&sb, "/chat", &["-n", "1000", "--size", "64"]);
    assert_eq!(
        (report.status, report.sent, report.echoed),
        (101, 1000, 1000)
    );
    assert_eq!(report.close_code, Some(1000), "{report:?}");
    assert_eq!(report.closed_by, "client");
    let pod = report.pod.clone().unwrap_or_default();
    assert!(pod.starts_with("orders-v"), "answered by {pod:?}");
    wait_for_upgrades(&sb, 1.0);
    // The relayed frames count as the request's and the response's bytes, exactly.
    let sent =
        1000 * (MESSAGE_SIZE + CLIENT_FRAME_OVERHEAD) + CLOSE_PAYLOAD + CLIENT_FRAME_OVERHEAD;
    let echoed =
        1000 * (MESSAGE_SIZE + SERVER_FRAME_OVERHEAD) + CLOSE_PAYLOAD + SERVER_FRAME_OVERHEAD;
    assert_eq!(
        orders_metric(&sb, "istio_request_bytes_sum", "101"),
        sent as f64
    );
    assert_eq!(
        orders_metric(&sb, "istio_response_bytes_sum", "101"),
        echoed as f64
    );

    // The server closes a connection left quiet: the close reaches the client, and the
    // upgrade is recorded as ended normally (no flag).
    let report = ws_ok(
        &sb,
        "/idle?idle_close_ms=1500",
        &["-n", "5", "--expect-server-close"],
    );
    assert_eq!(
        (report.echoed, report.close_code),
        (5, Some(1000)),
        "{report:?}"
    );
    assert_eq!(report.closed_by, "server");
    wait_for_upgrades(&sb, 2.0);
    let text = waypoint_metrics(&sb).expect("metrics");
    let unflagged = metric_sum(
        &text,
        "istio_requests_total",
        &[("response_code", "101"), ("response_flags", "-")],
    );
    assert_eq!(unflagged, 2.0, "both upgrades ended cleanly");

    // HTTP/2 extended CONNECT from the client, HTTP/1.1 upgrade to the echo server.
    let report = ws_ok(&sb, "/chat", &["-n", "100", "--http2"]);
    assert_eq!((report.status, report.echoed), (200, 100), "{report:?}");
    wait_for_upgrades(&sb, 3.0);

    // `Upgrade: h2c` is not taken up: a plain HTTP/1.1 answer, the upgrade not passed on.
    let out = sb
        .exec(
            CLIENT,
            &[
                "meshctl",
                "app",
                "curl",
                "--fail",
                "-i",
                "-H",
                "Connection: Upgrade, HTTP2-Settings",
                "-H",
                "Upgrade: h2c",
                "-H",
                "HTTP2-Settings: AAMAAABkAAQAAP__",
                "http://orders:8080/h2c",
            ],
        )
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2c request failed: {out:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo = e2e::json(body);
    let headers = echo["headers"].as_object().expect("echoed headers");
    assert!(
        !headers.contains_key("upgrade") && !headers.contains_key("http2-settings"),
        "{headers:?}"
    );
    assert_eq!(orders_metric(&sb, "istio_requests_total", "101"), 3.0);
}

#[test]
fn websocket_upgrades_are_authorized_and_routed_like_requests() {
    let sb = shop::up();
    apply_example(&sb, "websocket");

    // Denied by path: 403, and no echo server ever sees the request.
    let denied = || ws(&sb, "/private/room", &["-n", "1"]);
    let refused = eventually(
        SETTLE,
        || matches!(denied(), Err(WsFailure { code: Some(22), ref stderr }) if stderr.contains("HTTP 403")),
    );
    assert!(
        refused,
        "never refused: {:?}\n{}",
        denied(),
        waypoint_log(&sb)
    );
    let before = served(&sb, "orders-v1") + served(&sb, "orders-v2");
    let failure = denied().expect_err("still denied");
    assert!(failure.stderr.contains("HTTP 403"), "{failure:?}");
    assert_eq!(served(&sb, "orders-v1") + served(&sb, "orders-v2"), before);
    assert!(orders_metric(&sb, "istio_requests_total", "403") >= 2.0);

    // A header match sends the upgrade to v2, every time.
    let v2 = ["-n", "3", "-H", "x-chat-version: v2"];
    for _ in 0..10 {
        let report = ws_ok(&sb, "/chat", &v2);
        assert_eq!(report.echoed, 3, "{report:?}");
        let pod = report.pod.unwrap_or_default();
        assert!(pod.starts_with("orders-v2-"), "answered by {pod}");
    }
}
