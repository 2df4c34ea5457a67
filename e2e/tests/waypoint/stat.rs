//! `meshctl stat` against the shop: the requests sent while it measures, counted per
//! workload from the waypoint's metrics, with the success rate the injected failures give.

use super::shop::{self, CLIENT, NS, ORDERS, assert_stat_figures, by_deployment, load, stat_row};

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
    let sent = |deployment: &str| {
        let count = |replies: &std::collections::BTreeMap<String, u64>| {
            replies.get(deployment).copied().unwrap_or_default()
        };
        (count(&ok), count(&failed))
    };
    for deployment in ["orders-v1", "orders-v2"] {
        let (good, bad) = sent(deployment);
        let row = stat_row(&report, deployment).expect("a row");
        assert_eq!(row["requests"], good + bad, "{deployment}: {row}");
    }
    assert_stat_figures(&report, sent);
}
