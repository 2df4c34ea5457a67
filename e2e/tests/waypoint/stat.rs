//! `meshctl stat` against the shop: the requests sent while it measures, counted per
//! workload from the waypoint's metrics, with the success rate the injected failures give.

use super::shop::{self, CLIENT, NS, ORDERS, by_deployment, load};

/// Requests answered normally, and requests the echo servers are told to fail.
const OK_REQUESTS: u64 = 200;
const FAILED_REQUESTS: u64 = 20;

#[test]
fn stat_counts_each_workloads_requests_and_failures_over_its_window() {
    let sb = shop::up();
    // The window begins once the first scrape is done.
    let (mut stat, line) = sb
        .spawn_watching(&["stat", "deploy", "-n", NS, "--window", "20s", "-o", "json"])
        .expect("meshctl stat starts");
    assert!(line.starts_with("scraped 3 proxies"), "{line}");

    let ok = by_deployment(&load(&sb, CLIENT, &format!("{ORDERS}/"), OK_REQUESTS, &[]));
    let failed = by_deployment(&load(
        &sb,
        CLIENT,
        &format!("{ORDERS}/?status=503"),
        FAILED_REQUESTS,
        &[],
    ));
    assert_eq!(ok.values().sum::<u64>(), OK_REQUESTS, "{ok:?}");
    assert_eq!(failed.values().sum::<u64>(), FAILED_REQUESTS, "{failed:?}");
    let still_measuring = stat.try_wait().unwrap().is_none();
    assert!(still_measuring, "the loads outlasted the 20 s window");

    let out = stat.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {report}"))
            .clone()
    };
    for deployment in ["orders-v1", "orders-v2"] {
        let (good, bad) = (
            ok.get(deployment).copied().unwrap_or_default(),
            failed.get(deployment).copied().unwrap_or_default(),
        );
        let row = row(deployment);
        assert_eq!(row["requests"], good + bad, "{deployment}: {row}");
        let success = row["success_rate"].as_f64().unwrap();
        let expected = good as f64 / (good + bad) as f64;
        assert!((success - expected).abs() < 1e-9, "{deployment}: {row}");
        assert_eq!(row["meshed_pods"], 1, "{row}");
        assert_eq!(
            row["mtls_share"], 1.0,
            "the waypoint reaches it over HBONE: {row}"
        );
        assert!(row["latency_ms_p50"].as_f64().unwrap() > 0.0, "{row}");
    }
    // Nothing calls the api-gateway: no request figures, and none invented.
    let idle = row("api-gateway");
    assert!(idle["requests"].is_null(), "{idle}");
    assert_eq!(report["unreachable"], serde_json::json!([]), "{report}");
}
