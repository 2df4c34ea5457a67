//! The last minutes of each row's figures, kept in memory for the detail pages' charts.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::operator::stat::Row;

/// One row's figures at one refresh.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// Requests per second.
    pub requests_per_second: Option<f64>,
    /// Share of requests that did not fail, from 0 to 1.
    pub success_rate: Option<f64>,
    /// Latency percentiles, milliseconds.
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile.
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile.
    pub latency_ms_p99: Option<f64>,
    /// TCP connections opened per second.
    pub connections_per_second: f64,
    /// Bytes per second the destination received.
    pub read_bytes_per_second: f64,
}

impl Point {
    fn of(row: &Row, at: u64, window_seconds: f64) -> Self {
        Self {
            at,
            requests_per_second: row.requests_per_second,
            success_rate: row.success_rate,
            latency_ms_p50: row.latency_ms_p50,
            latency_ms_p95: row.latency_ms_p95,
            latency_ms_p99: row.latency_ms_p99,
            connections_per_second: if window_seconds > 0.0 {
                row.tcp_opened as f64 / window_seconds
            } else {
                0.0
            },
            read_bytes_per_second: row.read_bytes_per_second,
        }
    }
}

/// Per (kind, namespace, name), its points, oldest first, at most `keep` of them.
#[derive(Debug)]
pub struct History {
    keep: usize,
    series: BTreeMap<(String, String, String), VecDeque<Point>>,
}

impl History {
    /// A history of at most `keep` points per row.
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            series: BTreeMap::new(),
        }
    }

    /// Adds the rows of `kind` (`deploy`, `svc`, `ns`) measured at `at`; rows of that kind
    /// that are gone are forgotten.
    pub fn record(&mut self, kind: &str, rows: &[Row], at: u64, window_seconds: f64) {
        let mut seen = Vec::with_capacity(rows.len());
        for row in rows {
            let key = (kind.to_owned(), row.namespace.clone(), row.name.clone());
            let points = self.series.entry(key.clone()).or_default();
            points.push_back(Point::of(row, at, window_seconds));
            while points.len() > self.keep {
                points.pop_front();
            }
            seen.push(key);
        }
        self.series
            .retain(|key, _| key.0 != kind || seen.contains(key));
    }

    /// The points of one row, oldest first (none when it was never measured).
    pub fn of(&self, kind: &str, namespace: &str, name: &str) -> Vec<Point> {
        let key = (kind.to_owned(), namespace.to_owned(), name.to_owned());
        self.series
            .get(&key)
            .map(|points| points.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, rps: f64) -> Row {
        Row {
            namespace: "shop".into(),
            name: name.into(),
            meshed_pods: 1,
            pods: 1,
            requests: Some(10),
            success_rate: Some(1.0),
            requests_per_second: Some(rps),
            latency_ms_p50: Some(1.0),
            latency_ms_p95: Some(2.0),
            latency_ms_p99: Some(3.0),
            tcp_connections: 0,
            tcp_opened: 20,
            read_bytes_per_second: 5.0,
            write_bytes_per_second: 5.0,
            mtls_share: Some(1.0),
        }
    }

    #[test]
    fn keeps_the_newest_points_per_row_and_forgets_rows_that_are_gone() {
        let mut history = History::new(2);
        history.record(
            "deploy",
            &[row("orders", 1.0), row("payments", 1.0)],
            10,
            10.0,
        );
        history.record("deploy", &[row("orders", 2.0)], 15, 10.0);
        history.record("deploy", &[row("orders", 3.0)], 20, 10.0);
        history.record("svc", &[row("orders", 9.0)], 20, 10.0);
        let orders = history.of("deploy", "shop", "orders");
        let rates: Vec<_> = orders.iter().map(|p| p.requests_per_second).collect();
        assert_eq!(rates, [Some(2.0), Some(3.0)]);
        assert_eq!(orders[1].at, 20);
        assert_eq!(orders[1].connections_per_second, 2.0);
        assert!(history.of("deploy", "shop", "payments").is_empty());
        assert_eq!(history.of("svc", "shop", "orders").len(), 1);
    }
}
