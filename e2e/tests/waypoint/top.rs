//! `meshctl top` against the shop: a known mix of requests through the waypoint becomes
//! exactly one row per (source, method, path), with its count and success rate.

use e2e::{SETTLE, eventually};

use super::shop::{self, CLIENT, NS, load};

/// orders-v1 (bound to the waypoint) as the client calls it.
const ORDERS_V1: &str = "http://orders-v1:8080";

#[test]
fn top_counts_a_known_mix_per_path_with_its_success_rate() {
    let sb = shop::up();
    let (mut top, line) = sb
        .spawn_watching(&[
            "top",
            "deploy/orders-v1",
            "-n",
            NS,
            "--max",
            "50",
            "-o",
            "json",
        ])
        .expect("meshctl top starts");
    assert_eq!(line.trim(), "tapping 1 waypoints");

    let a = load(&sb, CLIENT, &format!("{ORDERS_V1}/a"), 30, &[]);
    assert_eq!(a.count(200), 30, "{a:?}");
    let b = load(&sb, CLIENT, &format!("{ORDERS_V1}/b"), 15, &[]);
    assert_eq!(b.count(200), 15, "{b:?}");
    // http-echo answers the status the query asks for: failures the table must count.
    let failed = load(&sb, CLIENT, &format!("{ORDERS_V1}/b?status=500"), 5, &[]);
    assert_eq!(failed.count(500), 5, "{failed:?}");

    let exited = eventually(SETTLE, || top.try_wait().unwrap().is_some());
    if !exited {
        let _ = top.kill();
    }
    let out = top.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(exited, "top did not stop after 50 requests:\n{stdout}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let summary: Vec<(&str, &str, u64, u64, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap(),
                r["count"].as_u64().unwrap(),
                r["successes"].as_u64().unwrap(),
                r["success_rate"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("GET", "/a", 30, 30, 1.0), ("GET", "/b", 20, 15, 0.75)],
        "{stdout}"
    );
    for row in &rows {
        assert_eq!(row["source"], rows[0]["source"], "one client: {stdout}");
        assert!(row["latency_max_ms"].as_f64().unwrap() >= row["latency_p50_ms"].as_f64().unwrap());
    }
    assert_ne!(rows[0]["source"], "-", "the caller is known: {stdout}");
}
