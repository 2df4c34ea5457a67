//! `meshctl tap` against the shop: exactly the requests sent while it runs, each with its
//! status, route and caller; and a tap client that never reads costs the waypoint counted
//! drops, not memory, and its traffic nothing.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use e2e::measure::rss_mib;
use e2e::mesh::in_netns;
use e2e::metrics::metric_sum;
use e2e::{SETTLE, eventually};

use super::shop::{self, CLIENT, NS, by_deployment, load, waypoint_metrics};

/// orders-v1 (bound to the waypoint) as the client calls it.
const ORDERS_V1: &str = "http://orders-v1:8080";
/// Requests the tap must show, exactly.
const TAPPED: u64 = 50;

#[test]
fn tap_prints_exactly_the_requests_sent_while_it_runs() {
    let sb = shop::up();
    let max = TAPPED.to_string();
    let (mut tap, line) = sb
        .spawn_watching(&[
            "tap",
            "deploy/orders-v1",
            "-n",
            NS,
            "--max",
            &max,
            "-o",
            "json",
        ])
        .expect("meshctl tap starts");
    assert_eq!(line.trim(), "tapping 1 waypoints");

    let sent = load(&sb, CLIENT, &format!("{ORDERS_V1}/tapped"), TAPPED, &[]);
    assert_eq!(sent.count(200), TAPPED, "{sent:?}");
    assert_eq!(by_deployment(&sent).get("orders-v1"), Some(&TAPPED));
    let exited = eventually(SETTLE, || tap.try_wait().unwrap().is_some());
    if !exited {
        let _ = tap.kill();
    }
    let out = tap.wait_with_output().unwrap();
    assert!(exited, "tap did not stop after {TAPPED} requests");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len() as u64, TAPPED);
    for event in &events {
        assert_eq!(event["method"], "GET", "{event}");
        assert_eq!(event["path"], "/tapped", "{event}");
        assert_eq!(event["status"], 200, "{event}");
        assert_eq!(event["destination_workload"], "orders-v1", "{event}");
        assert_eq!(
            event["source_identity"], "spiffe://cluster.local/ns/shop/sa/client",
            "{event}"
        );
        assert!(!event["route"].as_str().unwrap().is_empty(), "{event}");
    }
}

/// `waypoint_tap_events_dropped_total`.
fn tap_drops(sb: &e2e::Sandbox) -> f64 {
    waypoint_metrics(sb).map_or(-1.0, |m| {
        metric_sum(&m, "waypoint_tap_events_dropped_total", &[])
    })
}

#[test]
fn a_tap_client_that_never_reads_costs_drops_not_memory_or_traffic() {
    const ROUND: u64 = 3000;
    let sb = shop::up();
    let pid = shop::waypoint_pid(&sb);
    let orders = format!("{ORDERS_V1}/");
    // The allocator keeps what a first round freed: the baseline is taken after one.
    assert_eq!(load(&sb, CLIENT, &orders, ROUND, &[]).count(200), ROUND);
    let rss_before = rss_mib(pid).unwrap();

    let netns = sb.netns_path(&format!("{NS}.{}", shop::waypoint_pod_name(&sb)));
    let stalled = in_netns(&netns, || -> std::io::Result<TcpStream> {
        let mut tap = TcpStream::connect("127.0.0.1:15000")?;
        tap.write_all(b"GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        Ok(tap)
    })
    .unwrap()
    .unwrap();
    let sent = load(&sb, CLIENT, &orders, ROUND, &[]);
    assert_eq!(sent.count(200), ROUND, "traffic is unaffected: {sent:?}");
    let dropped = tap_drops(&sb);
    assert!(
        dropped > 0.0,
        "a reader that never reads loses events: {dropped}"
    );
    let rss_after = rss_mib(pid).unwrap();
    eprintln!(
        "waypoint RSS {rss_before:.1} MiB before, {rss_after:.1} MiB with a stalled tap; \
         {dropped} events dropped"
    );
    assert!(rss_after <= rss_before * 1.10, "memory stays bounded");
    drop(stalled);
    // Gone with its client: later requests are not queued for it.
    let before = tap_drops(&sb);
    let settled = eventually(Duration::from_secs(30), || {
        load(&sb, CLIENT, &orders, 10, &[]);
        tap_drops(&sb) == before
    });
    assert!(settled, "the stalled listener left with its connection");
}
