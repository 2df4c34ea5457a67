//! `meshctl stat`, `edges` and `routes` in Kubernetes mode against a fake API server that
//! serves, through its pod proxy, each proxy's `/metrics` twice: the first scrape as it was,
//! the second after a known number of connections and requests. The ztunnels' exposition is
//! rendered by the mesh's own TCP telemetry (`proxy_core::telemetry::Metrics`), the
//! waypoint's by the mesh's metrics library in the waypoint's families and label order.
//! `stat --prometheus` asks a fake Prometheus instead.

mod kube_cluster;

use std::iter::repeat_n;
use std::net::SocketAddr;
use std::time::Duration;

use kube_cluster::{Cluster, healthy, metadata, ready_pod};
use prometheus_registry::{Histogram, text};
use proxy_core::telemetry::{ConnectionLabels, ConnectionRecord, Metrics, Reporter};
use serde_json::{Value, json};
use test_support::fake_kube::{FakeKube, Reply, Routes, list};

const ZTUNNEL_1: &str = "/api/v1/namespaces/istio-system/pods/ztunnel-aaaaa:15020/proxy/metrics";
const ZTUNNEL_2: &str = "/api/v1/namespaces/istio-system/pods/ztunnel-bbbbb:15020/proxy/metrics";
const WAYPOINT: &str = "/api/v1/namespaces/shop/pods/waypoint-5d8f-xk2p:15020/proxy/metrics";
const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
const ORDERS_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";

/// A pod of Deployment `deployment` (through its ReplicaSet `<deployment>-<hash>`).
fn app_pod(deployment: &str, hash: &str, suffix: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["pod-template-hash"] = json!(hash);
    let mut meta = metadata("shop", &format!("{deployment}-{hash}-{suffix}"));
    meta["labels"] = labels;
    meta["ownerReferences"] = json!([{"kind": "ReplicaSet", "name": format!("{deployment}-{hash}"),
                                      "controller": true}]);
    json!({"metadata": meta, "spec": {"nodeName": "node2"}, "status": {"phase": "Running"}})
}

/// The healthy cluster with an ambient namespace `shop` (Deployments frontend, orders with
/// one of its two pods opted out of the mesh, and the waypoint; Service orders), whose
/// proxies answer `ztunnel_1`, `ztunnel_2` and `waypoint` (first and second scrape).
fn shop(ztunnel_1: Vec<Reply>, ztunnel_2: Vec<Reply>, waypoint: Vec<Reply>) -> Routes {
    let pods = vec![
        app_pod("frontend", "6c7d", "aaaaa", json!({"app": "frontend"})),
        app_pod("orders", "5f4b", "bbbbb", json!({"app": "orders"})),
        app_pod(
            "orders",
            "5f4b",
            "ccccc",
            json!({"app": "orders", "istio.io/dataplane-mode": "none"}),
        ),
        app_pod(
            "waypoint",
            "5d8f",
            "xk2p",
            json!({"gateway.networking.k8s.io/gateway-name": "waypoint"}),
        ),
    ];
    let deployment = |name: &str| json!({"metadata": metadata("shop", name)});
    let namespace = |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels, "resourceVersion": "1"}});
    let orders = json!({"metadata": metadata("shop", "orders"),
                        "spec": {"selector": {"app": "orders"}, "ports": [{"port": 8080}]}});
    healthy()
        .json(
            "/api/v1/namespaces",
            list(
                "Namespace",
                vec![
                    namespace("shop", json!({"istio.io/dataplane-mode": "ambient"})),
                    namespace("istio-system", json!({})),
                ],
            ),
        )
        .json("/api/v1/namespaces/shop/pods", list("Pod", pods.clone()))
        .json("/api/v1/pods", list("Pod", pods))
        .json(
            "/apis/apps/v1/namespaces/shop/deployments",
            list(
                "Deployment",
                ["frontend", "orders", "waypoint"].map(deployment).to_vec(),
            ),
        )
        .json(
            "/api/v1/namespaces/shop/services",
            list("Service", vec![orders.clone()]),
        )
        .json("/api/v1/namespaces/shop/services/orders", orders)
        .in_turn(ZTUNNEL_1, ztunnel_1)
        .in_turn(ZTUNNEL_2, ztunnel_2)
        .in_turn(WAYPOINT, waypoint)
}

/// A TCP connection to orders, as `reporter` reports it; mutual TLS from frontend, or
/// plaintext from a client the mesh does not know.
fn to_orders(reporter: Reporter, mtls: bool) -> ConnectionLabels {
    let client = |value: &str| {
        if mtls {
            value.to_owned()
        } else {
            String::new()
        }
    };
    ConnectionLabels {
        reporter: Some(reporter),
        source_workload: client("frontend"),
        source_workload_namespace: client("shop"),
        source_principal: client(FRONTEND_ID),
        destination_workload: "orders".into(),
        destination_workload_namespace: "shop".into(),
        destination_principal: ORDERS_ID.into(),
        destination_service: "orders.shop.svc.cluster.local".into(),
        destination_service_name: "orders".into(),
        destination_service_namespace: "shop".into(),
        connection_security_policy: if mtls { "mutual_tls" } else { "" }.into(),
        ..ConnectionLabels::default()
    }
}

fn closed(labels: ConnectionLabels, from_client: u64, from_server: u64) -> ConnectionRecord {
    let address = |port| SocketAddr::from(([10, 244, 1, 5], port));
    ConnectionRecord {
        labels,
        source: address(40000),
        destination: address(8080),
        bytes_sent: from_client,
        bytes_received: from_server,
        duration: Duration::from_millis(5),
        error: None,
    }
}

/// The two ztunnels' expositions before and after the window: before it, 5 connections from
/// frontend, all closed; in it, 3 more (one closed after 600 bytes up and 1,200 down) and one
/// plaintext connection from outside the mesh. Node1's ztunnel is frontend's (source side),
/// node2's is orders' (destination side).
fn ztunnels() -> [(String, String); 2] {
    let (source, destination) = (Metrics::new(), Metrics::new());
    for _ in 0..5 {
        for (metrics, reporter) in [
            (&source, Reporter::Source),
            (&destination, Reporter::Destination),
        ] {
            metrics.connection_opened(&to_orders(reporter, true));
            metrics.connection_closed(&closed(to_orders(reporter, true), 100, 100));
        }
    }
    let before = (source.render(), destination.render());
    for _ in 0..3 {
        source.connection_opened(&to_orders(Reporter::Source, true));
        destination.connection_opened(&to_orders(Reporter::Destination, true));
    }
    destination.connection_closed(&closed(to_orders(Reporter::Destination, true), 600, 1200));
    destination.connection_opened(&to_orders(Reporter::Destination, false));
    [
        (before.0, source.render()),
        (before.1, destination.render()),
    ]
}

/// Envoy's buckets, in milliseconds, as the waypoint's request durations use them.
const MS_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// The same in seconds, as its per-route durations use them.
const SECONDS_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// One request to orders the waypoint served: its status, latency and route (`None`: the
/// default route).
type Served = (u16, f64, Option<&'static str>);

/// The waypoint's exposition after `served`: `istio_requests_total` and
/// `istio_request_duration_milliseconds` with Istio's labels in the waypoint's order, and
/// the per-route families with Linkerd's labels.
fn waypoint_exposition(served: &[Served]) -> String {
    let mut out = String::new();
    let codes: std::collections::BTreeSet<u16> = served.iter().map(|s| s.0).collect();
    let request_labels = |code: u16| {
        let code = code.to_string();
        text::render_labels(&[
            ("reporter", "waypoint", ""),
            ("source_workload", "frontend", ""),
            ("source_canonical_service", "frontend", ""),
            ("source_canonical_revision", "latest", ""),
            ("source_workload_namespace", "shop", ""),
            ("source_principal", FRONTEND_ID, ""),
            ("source_app", "frontend", ""),
            ("source_version", "unknown", ""),
            ("source_cluster", "unknown", ""),
            ("destination_workload", "orders", ""),
            ("destination_workload_namespace", "shop", ""),
            ("destination_principal", ORDERS_ID, ""),
            ("destination_app", "orders", ""),
            ("destination_version", "unknown", ""),
            ("destination_service", "orders.shop.svc.cluster.local", ""),
            ("destination_canonical_service", "orders", ""),
            ("destination_canonical_revision", "latest", ""),
            ("destination_service_name", "orders", ""),
            ("destination_service_namespace", "shop", ""),
            ("destination_cluster", "unknown", ""),
            ("request_protocol", "http", ""),
            ("response_code", &code, ""),
            ("grpc_response_status", "", ""),
            ("response_flags", "-", ""),
            ("connection_security_policy", "mutual_tls", ""),
        ])
    };
    text::family(&mut out, "istio_requests_total", "Requests.", "counter");
    for code in &codes {
        let count = served.iter().filter(|s| s.0 == *code).count();
        out.push_str(&format!(
            "istio_requests_total{} {count}\n",
            request_labels(*code)
        ));
    }
    let duration = "istio_request_duration_milliseconds";
    text::family(&mut out, duration, "Request duration.", "histogram");
    for code in &codes {
        let histogram = Histogram::new(&MS_BUCKETS, 1000.0);
        served
            .iter()
            .filter(|s| s.0 == *code)
            .for_each(|s| histogram.observe(s.1));
        histogram.render(&mut out, duration, &request_labels(*code));
    }
    let route_labels = |route: Option<&str>| {
        let (group, kind, namespace, name) = match route {
            Some(name) => ("networking.istio.io", "VirtualService", "shop", name),
            None => ("", "default", "", "http"),
        };
        let labels = text::render_labels(&[
            ("parent_group", "core", ""),
            ("parent_kind", "Service", ""),
            ("parent_namespace", "shop", ""),
            ("parent_name", "orders", ""),
            ("route_group", group, ""),
            ("route_kind", kind, ""),
            ("route_namespace", namespace, ""),
            ("route_name", name, ""),
        ]);
        labels[1..labels.len() - 1].to_owned()
    };
    let statuses = "outbound_http_route_request_statuses_total";
    text::family(&mut out, statuses, "Route statuses.", "counter");
    let routes = [Some("primary"), None];
    for route in routes {
        for code in &codes {
            let count = served
                .iter()
                .filter(|s| s.2 == route && s.0 == *code)
                .count();
            if count > 0 {
                let labels = route_labels(route);
                out.push_str(&format!(
                    "{statuses}{{{labels},http_status=\"{code}\",error=\"\"}} {count}\n"
                ));
            }
        }
    }
    let route_duration = "outbound_http_route_request_duration_seconds";
    text::family(&mut out, route_duration, "Route durations.", "histogram");
    for route in routes {
        let histogram = Histogram::new(&SECONDS_BUCKETS, 1e9);
        served
            .iter()
            .filter(|s| s.2 == route)
            .for_each(|s| histogram.observe(s.1 / 1000.0));
        let labels = format!("{{{}}}", route_labels(route));
        histogram.render(&mut out, route_duration, &labels);
    }
    out
}

/// The waypoint before and after the window: before it, 10 requests answered 200 in 3 ms;
/// in it, 20 more: 16 answered 200 (10 in 3 ms, 6 in 7 ms) and 2 answered 503 in 7 ms by
/// route `primary`, and 2 that no route took answered 404 in 40 ms.
fn waypoint() -> (String, String) {
    let primary = |code, ms| (code, ms, Some("primary"));
    let mut served: Vec<Served> = repeat_n(primary(200, 3.0), 10).collect();
    let before = waypoint_exposition(&served);
    served.extend(repeat_n(primary(200, 3.0), 10));
    served.extend(repeat_n(primary(200, 7.0), 6));
    served.extend(repeat_n(primary(503, 7.0), 2));
    served.extend(repeat_n((404, 40.0, None), 2));
    (before, waypoint_exposition(&served))
}

/// The shop cluster whose proxies saw the traffic of [`ztunnels`] and [`waypoint`].
fn busy_shop() -> Cluster {
    let text = |body: String| Reply::Text(200, body);
    let [(z1_before, z1_after), (z2_before, z2_after)] = ztunnels();
    let (wp_before, wp_after) = waypoint();
    Cluster::serve(shop(
        vec![text(z1_before), text(z1_after)],
        vec![text(z2_before), text(z2_after)],
        vec![text(wp_before), text(wp_after)],
    ))
}

/// Runs `args` with `-o json --window 1s` against `cluster`; returns the JSON.
fn measured(cluster: &Cluster, args: &[&str]) -> Value {
    let run = cluster.meshctl(&[args, &["-o", "json", "--window", "1s"]].concat());
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// Asserts that each proxy's metrics were read twice through the pod proxy.
fn assert_scraped_twice(cluster: &Cluster) {
    let paths = cluster.paths();
    for proxy in [ZTUNNEL_1, ZTUNNEL_2, WAYPOINT] {
        let times = paths.iter().filter(|p| *p == proxy).count();
        assert_eq!(times, 2, "{proxy} scraped {times} times: {paths:?}");
    }
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

fn assert_close(value: &Value, expected: f64) {
    let found = number(value);
    // Relative: a rate divides by the window, which JSON carries to the last digit or so.
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (found - expected).abs() < tolerance,
        "{found} is not {expected}"
    );
}

/// The figures of the orders row, the same whether it is the Deployment or the Service.
fn assert_orders_figures(row: &Value, seconds: f64) {
    assert_eq!(
        (row["meshed_pods"].as_u64(), row["pods"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(row["requests"], 20);
    assert_close(&row["requests_per_second"], 20.0 / seconds);
    assert_eq!(row["success_rate"], 0.9);
    assert_close(&row["latency_ms_p50"], 5.0);
    assert_close(&row["latency_ms_p95"], 37.5);
    assert_close(&row["latency_ms_p99"], 47.5);
    assert_eq!(
        (row["tcp_opened"].as_u64(), row["tcp_connections"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(row["mtls_share"], 0.75);
    assert_close(&row["read_bytes_per_second"], 600.0 / seconds);
    assert_close(&row["write_bytes_per_second"], 1200.0 / seconds);
}

#[test]
fn stat_deploy_computes_each_deployments_row_from_two_scrapes_through_the_pod_proxy() {
    let cluster = busy_shop();
    let stat = measured(&cluster, &["stat", "deploy", "-n", "shop"]);
    assert_scraped_twice(&cluster);
    let seconds = number(&stat["window_seconds"]);
    assert_eq!(stat["unreachable"], json!([]));
    let rows = stat["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["frontend", "orders", "waypoint"]);
    assert_orders_figures(&rows[1], seconds);
    // No waypoint serves frontend, and no connection reached it.
    let frontend = &rows[0];
    assert_eq!(
        (frontend["meshed_pods"].as_u64(), frontend["pods"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(frontend["requests"], Value::Null);
    assert_eq!(frontend["mtls_share"], Value::Null);
    assert_eq!(frontend["tcp_opened"], 0);
}

#[test]
fn stat_svc_and_ns_aggregate_over_the_services_selector_and_the_namespace() {
    let cluster = busy_shop();
    let stat = measured(&cluster, &["stat", "svc/orders", "-n", "shop"]);
    let rows = stat["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{stat}");
    assert_eq!(rows[0]["name"], "orders");
    assert_orders_figures(&rows[0], number(&stat["window_seconds"]));

    let cluster = busy_shop();
    let stat = measured(&cluster, &["stat", "ns/shop"]);
    let row = &stat["rows"][0];
    assert_eq!(
        (row["namespace"].as_str(), row["name"].as_str()),
        (Some("shop"), Some("shop"))
    );
    assert_eq!(
        (row["meshed_pods"].as_u64(), row["pods"].as_u64()),
        (Some(3), Some(4))
    );
    assert_eq!(row["requests"], 20);
    assert_eq!(row["mtls_share"], 0.75);
    assert!(
        cluster
            .paths()
            .iter()
            .any(|p| p == "/api/v1/namespaces/shop/pods")
    );
}

#[test]
fn stat_prints_the_sandboxs_table() {
    let cluster = busy_shop();
    let run = cluster.meshctl(&["stat", "deploy/orders", "-n", "shop", "--window", "1s"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let lines: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert_eq!(lines[0][..3], ["NAME", "MESHED", "SUCCESS"]);
    // Rates depend on the measured window; the rest does not.
    assert_eq!(lines[1][..3], ["orders", "1/2", "90.00%"]);
    assert_eq!(lines[1][4..8], ["5.0ms", "38ms", "48ms", "3"]);
    assert_eq!(lines[1][10], "75%");
    assert_eq!(run.stderr, "scraped 3 proxies; measuring for 1s\n");
}

#[test]
fn edges_name_both_identities_as_the_servers_ztunnel_saw_them() {
    let cluster = busy_shop();
    let seen = measured(&cluster, &["edges", "deploy", "-n", "shop"]);
    assert_scraped_twice(&cluster);
    assert_eq!(
        seen["edges"],
        json!([
            {"source_namespace": "shop", "source": "frontend", "source_identity": FRONTEND_ID,
             "destination_namespace": "shop", "destination": "orders",
             "destination_identity": ORDERS_ID, "secured": true, "connections": 3},
            {"source_namespace": "unknown", "source": "unknown", "source_identity": "unknown",
             "destination_namespace": "shop", "destination": "orders",
             "destination_identity": ORDERS_ID, "secured": false, "connections": 1},
        ])
    );
}

#[test]
fn routes_give_each_route_of_the_service_and_the_default_last() {
    let cluster = busy_shop();
    let measured = measured(&cluster, &["routes", "svc/orders", "-n", "shop"]);
    assert_scraped_twice(&cluster);
    let seconds = number(&measured["window_seconds"]);
    let routes = measured["routes"].as_array().expect("routes");
    let names: Vec<&str> = routes.iter().filter_map(|r| r["route"].as_str()).collect();
    assert_eq!(names, ["primary", "[default]"]);
    let primary = &routes[0];
    assert_eq!(
        (primary["kind"].as_str(), primary["namespace"].as_str()),
        (Some("VirtualService"), Some("shop"))
    );
    assert_eq!(primary["requests"], 18);
    assert_close(&primary["requests_per_second"], 18.0 / seconds);
    assert_close(&primary["success_rate"], 16.0 / 18.0);
    assert_close(&primary["latency_ms_p50"], 4.6);
    assert_close(&primary["latency_ms_p95"], 9.4375);
    assert_close(&primary["latency_ms_p99"], 9.8875);
    let default = &routes[1];
    assert_eq!(default["requests"], 2);
    assert_eq!(default["success_rate"], 1.0);
    assert_close(&default["latency_ms_p50"], 37.5);
    assert_close(&default["latency_ms_p99"], 49.75);
}

#[test]
fn routes_of_a_service_the_cluster_lacks_fail_before_scraping() {
    let cluster = busy_shop();
    let run = cluster.meshctl(&["routes", "svc/payments", "-n", "shop", "--window", "1s"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stderr, "error: service shop/payments not found\n");
    assert!(
        !cluster
            .paths()
            .iter()
            .any(|p| p.ends_with("/proxy/metrics"))
    );
}

#[test]
fn a_proxy_that_cannot_be_scraped_is_named_and_the_others_still_count() {
    let [_, (z2_before, z2_after)] = ztunnels();
    let (wp_before, wp_after) = waypoint();
    let refused = Reply::Text(
        503,
        "error trying to reach service: connection refused".into(),
    );
    let cluster = Cluster::serve(shop(
        vec![refused],
        vec![Reply::Text(200, z2_before), Reply::Text(200, z2_after)],
        vec![Reply::Text(200, wp_before), Reply::Text(200, wp_after)],
    ));
    let run = cluster.meshctl(&[
        "edges", "deploy", "-n", "shop", "--window", "1s", "-o", "json",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let unreachable = format!(
        "ztunnel node1: {ZTUNNEL_1} answered 503: error trying to reach service: connection \
         refused"
    );
    assert!(
        run.stderr.contains(&format!(
            "warning: no metrics from {unreachable}: its traffic is missing\n"
        )),
        "{run:?}"
    );
    let seen: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(seen["unreachable"], json!([unreachable]));
    assert_eq!(seen["edges"][0]["connections"], 3);
}

/// `%XX` decoded: a query's value as Prometheus reads it.
fn percent_decoded(text: &str) -> String {
    let mut out = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = tail
            .get(..2)
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (byte, escaped) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                rest = &tail[2..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake Prometheus: 50 requests to shop/orders in the window, 45 of them not 5xx, a median
/// of 2.5 ms; nothing else has series.
fn fake_prometheus() -> FakeKube {
    FakeKube::serve(|request| {
        let query = percent_decoded(request.query.strip_prefix("query=").unwrap_or_default());
        let orders = |value: &str| {
            json!([{"metric": {"destination_workload": "orders",
                               "destination_workload_namespace": "shop"},
                    "value": [1765070000.5, value]}])
        };
        let requests = "sum by (destination_workload, destination_workload_namespace) \
                        (increase(istio_requests_total{";
        if request.path != "/api/v1/query" {
            return Reply::Text(404, "404 page not found\n".into());
        }
        let result = if query.starts_with(requests) && query.contains("response_code!~\"5.*\"") {
            orders("45")
        } else if query.starts_with(requests) {
            orders("50")
        } else if query.starts_with("histogram_quantile(0.5,") {
            orders("2.5")
        } else {
            json!([])
        };
        Reply::Json(
            200,
            json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
        )
    })
}

/// The shop's namespace (enrolled), its Deployments and their pods (owned through their
/// ReplicaSets, as Deployments make them), one of them out of the mesh by its own label.
fn prometheus_shop() -> Routes {
    let deployment = |name: &str| {
        json!({"metadata": metadata("shop", name),
               "spec": {"selector": {"matchLabels": {"app": name}}}})
    };
    let pod = |name: &str, deployment: &str, hash: &str, mesh: Option<&str>| {
        let mut labels = json!({"app": deployment, "pod-template-hash": hash});
        if let Some(mode) = mesh {
            labels["istio.io/dataplane-mode"] = json!(mode);
        }
        let mut pod = ready_pod("shop", name, "node1", labels);
        pod["metadata"]["ownerReferences"] = json!([{"kind": "ReplicaSet",
            "name": format!("{deployment}-{hash}"), "controller": true}]);
        pod
    };
    Routes::new()
        .json(
            "/api/v1/namespaces",
            list(
                "Namespace",
                vec![json!({"metadata": {"name": "shop",
                                         "labels": {"istio.io/dataplane-mode": "ambient"}}})],
            ),
        )
        .json(
            "/apis/apps/v1/namespaces/shop/deployments",
            list(
                "Deployment",
                vec![deployment("orders"), deployment("cache")],
            ),
        )
        .json(
            "/api/v1/namespaces/shop/pods",
            list(
                "Pod",
                vec![
                    pod("orders-5d8f-aaaaa", "orders", "5d8f", None),
                    pod("orders-5d8f-bbbbb", "orders", "5d8f", Some("none")),
                    pod("cache-77c4-ccccc", "cache", "77c4", None),
                ],
            ),
        )
}

#[test]
fn stat_with_prometheus_takes_rows_from_the_cluster_and_figures_from_prometheus() {
    let cluster = Cluster::serve(prometheus_shop());
    let prometheus = fake_prometheus();
    let url = prometheus.url();
    let run = cluster.meshctl(&[
        "stat",
        "deploy",
        "-n",
        "shop",
        "--prometheus",
        &url,
        "-o",
        "json",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let rows = report["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["cache", "orders"]);
    let (cache, orders) = (&rows[0], &rows[1]);
    assert_eq!(
        (&orders["meshed_pods"], &orders["pods"], &orders["requests"]),
        (&json!(1), &json!(2), &json!(50))
    );
    assert_eq!(orders["success_rate"], 0.9);
    assert_eq!(orders["latency_ms_p50"], 2.5);
    assert_eq!(orders["requests_per_second"], 50.0 / 30.0);
    assert_eq!(
        (&cache["meshed_pods"], &cache["pods"]),
        (&json!(1), &json!(1))
    );
    assert!(cache["requests"].is_null(), "{cache}");
    let queries: Vec<String> = prometheus
        .seen()
        .into_iter()
        .map(|r| percent_decoded(&r.query))
        .collect();
    assert_eq!(queries.len(), 11, "{queries:#?}");
    assert!(
        queries
            .iter()
            .all(|q| q.contains("destination_workload_namespace=\"shop\"")),
        "{queries:#?}"
    );

    let refused = cluster.meshctl(&["stat", "deploy", "--prometheus", "https://prometheus:9090"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.starts_with(
            "error: --prometheus https://prometheus:9090: https:// is not supported, only http://"
        ),
        "{refused:?}"
    );
}
