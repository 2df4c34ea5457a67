//! A shop on the healthy cluster, with traffic: Deployments frontend and orders in an ambient
//! namespace, whose proxies' metrics, served through the pod proxy, grew by a known number of
//! connections and requests between a first scrape and the next ones. The ztunnels'
//! exposition is rendered by the mesh's own TCP telemetry (`proxy_core::telemetry::Metrics`),
//! the waypoint's by the mesh's metrics library in the waypoint's families and label order.

use std::iter::repeat_n;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_registry::{Histogram, text};
use proxy_core::telemetry::{ConnectionLabels, ConnectionRecord, Metrics, Reporter};
use serde_json::{Value, json};
use test_support::fake_kube::{Reply, Routes, list};

use super::{Cluster, healthy, metadata};

pub const ZTUNNEL_1: &str =
    "/api/v1/namespaces/istio-system/pods/ztunnel-aaaaa:15020/proxy/metrics";
pub const ZTUNNEL_2: &str =
    "/api/v1/namespaces/istio-system/pods/ztunnel-bbbbb:15020/proxy/metrics";
pub const WAYPOINT: &str = "/api/v1/namespaces/shop/pods/waypoint-5d8f-xk2p:15020/proxy/metrics";
pub const FRONTEND_ID: &str = "spiffe://cluster.local/ns/shop/sa/frontend";
pub const ORDERS_ID: &str = "spiffe://cluster.local/ns/shop/sa/orders";

/// A pod of Deployment `deployment` (through its ReplicaSet `<deployment>-<hash>`).
pub fn app_pod(deployment: &str, hash: &str, suffix: &str, labels: Value) -> Value {
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
pub fn shop(ztunnel_1: Vec<Reply>, ztunnel_2: Vec<Reply>, waypoint: Vec<Reply>) -> Routes {
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
    let deployments = ["frontend", "orders", "waypoint"].map(deployment).to_vec();
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
            list("Deployment", deployments.clone()),
        )
        .json("/apis/apps/v1/deployments", list("Deployment", deployments))
        .json(
            "/api/v1/namespaces/shop/services",
            list("Service", vec![orders.clone()]),
        )
        .json("/api/v1/services", list("Service", vec![orders.clone()]))
        .json("/api/v1/namespaces/shop/services/orders", orders)
        .in_turn(ZTUNNEL_1, ztunnel_1)
        .in_turn(ZTUNNEL_2, ztunnel_2)
        .in_turn(WAYPOINT, waypoint)
}

/// A TCP connection to orders, as `reporter` reports it; mutual TLS from frontend, or
/// plaintext from a client the mesh does not know.
pub fn to_orders(reporter: Reporter, mtls: bool) -> ConnectionLabels {
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

pub fn closed(labels: ConnectionLabels, from_client: u64, from_server: u64) -> ConnectionRecord {
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
pub fn ztunnels() -> [(String, String); 2] {
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
pub const MS_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// The same in seconds, as its per-route durations use them.
pub const SECONDS_BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// One request to orders the waypoint served: its status, latency and route (`None`: the
/// default route).
pub type Served = (u16, f64, Option<&'static str>);

/// The waypoint's exposition after `served`: `istio_requests_total` and
/// `istio_request_duration_milliseconds` with Istio's labels in the waypoint's order, and
/// the per-route families with Linkerd's labels.
pub fn waypoint_exposition(served: &[Served]) -> String {
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
pub fn waypoint() -> (String, String) {
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
pub fn busy_shop() -> Cluster {
    let text = |body: String| Reply::Text(200, body);
    let [(z1_before, z1_after), (z2_before, z2_after)] = ztunnels();
    let (wp_before, wp_after) = waypoint();
    Cluster::serve(shop(
        vec![text(z1_before), text(z1_after)],
        vec![text(z2_before), text(z2_after)],
        vec![text(wp_before), text(wp_after)],
    ))
}

pub fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is not a number"))
}

pub fn assert_close(value: &Value, expected: f64) {
    let found = number(value);
    // Relative: a rate divides by the window, which JSON carries to the last digit or so.
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (found - expected).abs() < tolerance,
        "{found} is not {expected}"
    );
}

/// The figures of the orders row, the same whether it is the Deployment or the Service.
pub fn assert_orders_figures(row: &Value, seconds: f64) {
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
