//! `meshctl routes` against the shop: a VirtualService of two named routes on `orders` and
//! an HTTPRoute of a named and an unnamed rule on `orders-v1`; the requests sent to each
//! route while it measures (some failed on purpose with the echo server's `?status=503`)
//! counted per route from the waypoint's per-route metrics, and those no route took under
//! `[default]`.

use e2e::{SETTLE, Sandbox, eventually};

use super::shop::{self, CLIENT, NS, load};

const ROUTES: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - name: a
    match: [{uri: {prefix: /a}}]
    route: [{destination: {host: orders}}]
  - name: b
    match: [{uri: {prefix: /b}}]
    route: [{destination: {host: orders}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders-v1, namespace: shop}
spec:
  parentRefs: [{group: \"\", kind: Service, name: orders-v1, port: 8080}]
  rules:
  - name: reads
    matches: [{path: {type: PathPrefix, value: /r}}]
    backendRefs: [{name: orders-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /w}}]
    backendRefs: [{name: orders-v1, port: 8080}]
";

/// What one route is sent while `routes` measures: `(url, answered, failed with 503)`.
type Sent = (&'static str, u64, u64);

/// Sends `ok` requests to `url` and `failed` more told to answer 503, from the client, and
/// checks every one got the status it asked for.
fn send(sb: &Sandbox, (url, ok, failed): Sent, ok_status: u16) {
    let report = load(sb, CLIENT, url, ok, &["-c", "4"]);
    assert_eq!(report.count(ok_status), ok, "{url}: {:?}", report.statuses);
    if failed > 0 {
        let failing = format!("{url}?status=503");
        let report = load(sb, CLIENT, &failing, failed, &["-c", "4"]);
        assert_eq!(
            report.count(503),
            failed,
            "{failing}: {:?}",
            report.statuses
        );
    }
}

/// The row of `route` in a `routes -o json` report.
fn row(report: &serde_json::Value, route: &str) -> serde_json::Value {
    report["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("no routes: {report}"))
        .iter()
        .find(|r| r["route"] == route)
        .unwrap_or_else(|| panic!("no route {route}: {report}"))
        .clone()
}

/// Checks `route` took `ok + failed` requests (within 1 %: the window is measured, not
/// exact) with the success rate the failures give.
fn assert_counted(report: &serde_json::Value, route: &str, kind: &str, ok: u64, failed: u64) {
    let row = row(report, route);
    let sent = (ok + failed) as f64;
    let requests = row["requests"].as_f64().unwrap_or(-1.0);
    assert!(
        (requests - sent).abs() <= sent * 0.01,
        "{route}: {requests} requests counted, {sent} sent: {row}"
    );
    assert_eq!(row["kind"], kind, "{row}");
    let success = row["success_rate"].as_f64().unwrap_or(-1.0);
    let expected = ok as f64 / sent;
    assert!(
        (success - expected).abs() <= 0.01,
        "{route}: success {success}, expected {expected}: {row}"
    );
    assert!(row["latency_ms_p50"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
}

/// Waits until the waypoint routes by the new config: a path no route takes is answered
/// 404 (before, every path reached orders).
fn wait_for_routes(sb: &Sandbox) {
    for url in ["http://orders:8080/none", "http://orders-v1:8080/none"] {
        let routed = eventually(SETTLE, || load(sb, CLIENT, url, 1, &[]).count(404) == 1);
        assert!(
            routed,
            "{url} never answered 404\n{}",
            shop::waypoint_log(sb)
        );
    }
}

#[test]
fn routes_count_each_routes_requests_and_failures_over_the_window() {
    let sb = shop::up();
    sb.apply(ROUTES).expect("the routes apply");
    wait_for_routes(&sb);

    let watch = |service: &str| {
        let resource = format!("svc/{service}");
        let args = [
            "routes", &resource, "-n", NS, "--window", "25s", "-o", "json",
        ];
        let (child, line) = sb.spawn_watching(&args).expect("meshctl routes starts");
        assert!(line.starts_with("scraped "), "{line}");
        child
    };
    let (mut orders, mut orders_v1) = (watch("orders"), watch("orders-v1"));

    let a: Sent = ("http://orders:8080/a/1", 100, 10);
    let b: Sent = ("http://orders:8080/b", 50, 0);
    let unrouted: Sent = ("http://orders:8080/c", 5, 0);
    let reads: Sent = ("http://orders-v1:8080/r", 40, 4);
    let writes: Sent = ("http://orders-v1:8080/w/2", 20, 0);
    for sent in [a, b, reads, writes] {
        send(&sb, sent, 200);
    }
    send(&sb, unrouted, 404);
    let still_measuring =
        |child: &mut std::process::Child| child.try_wait().ok().flatten().is_none();
    assert!(
        still_measuring(&mut orders) && still_measuring(&mut orders_v1),
        "the loads outlasted the 25 s window"
    );

    let report = |child: std::process::Child| -> serde_json::Value {
        let out = child.wait_with_output().expect("meshctl routes ends");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("routes -o json")
    };
    let orders = report(orders);
    assert_counted(&orders, "a", "VirtualService", 100, 10);
    assert_counted(&orders, "b", "VirtualService", 50, 0);
    assert_counted(&orders, "[default]", "", 5, 0);
    assert_eq!(
        orders["routes"].as_array().map(Vec::len),
        Some(3),
        "{orders}"
    );
    assert_eq!(orders["unreachable"], serde_json::json!([]), "{orders}");

    let orders_v1 = report(orders_v1);
    assert_counted(&orders_v1, "reads", "HTTPRoute", 40, 4);
    assert_counted(&orders_v1, "rule-1", "HTTPRoute", 20, 0);
    // The HTTPRoute's probe of an unrouted path is older than the window.
    let default = row(&orders_v1, "[default]");
    assert_eq!(default["requests"], 0, "{default}");

    // The table names the same routes.
    let table = sb
        .run(&["routes", "svc/orders", "-n", NS, "--window", "1s"].map(String::from))
        .expect("meshctl routes table");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{table:?}");
    let first_column: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(first_column, ["ROUTE", "a", "b", "[default]"], "{text}");

    // What is not one service is refused, naming why.
    let refused = |args: &[&str]| {
        let out = sb.command().args(args).output().expect("meshctl runs");
        assert!(!out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let deploy = refused(&["routes", "deploy/orders-v1", "-n", NS]);
    assert!(deploy.contains("routes svc/NAME"), "{deploy}");
    let missing = refused(&["routes", "svc/nothing", "-n", NS, "--window", "1s"]);
    assert!(
        missing.contains("service shop/nothing not found"),
        "{missing}"
    );
    let all = refused(&["routes", "svc/orders", "-A"]);
    assert!(all.contains("not -A"), "{all}");
}
