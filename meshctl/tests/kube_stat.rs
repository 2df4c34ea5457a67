//! `meshctl stat`, `edges` and `routes` in Kubernetes mode against a fake API server that
//! serves, through its pod proxy, each proxy's `/metrics` twice: the first scrape as it was,
//! the second after a known number of connections and requests. The ztunnels' exposition is
//! rendered by the mesh's own TCP telemetry (`proxy_core::telemetry::Metrics`), the
//! waypoint's by the mesh's metrics library in the waypoint's families and label order.
//! `stat --prometheus` asks a fake Prometheus instead.

mod kube_cluster;

use kube_cluster::shop::*;
use kube_cluster::{Cluster, metadata, ready_pod};
use serde_json::{Value, json};
use test_support::fake_kube::{FakeKube, Reply, Routes, list};

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
