//! `meshctl top`: the requests of a tap, grouped by (source, method, path) as `linkerd viz
//! top` groups them, with their count, success rate and latency. Memory stays bounded: each
//! row keeps a fixed histogram of latencies (p50 is read from it, within 5%), and past
//! [`MAX_ROWS`] rows new keys are counted in one `(other)` row.

use std::collections::HashMap;

use serde::Serialize;

/// Distinct rows kept; more are folded into [`OTHER`].
pub const MAX_ROWS: usize = 10_000;
/// The row of requests past [`MAX_ROWS`] distinct keys.
pub const OTHER: &str = "(other)";
/// Latency histogram: buckets grow by this ratio...
const BUCKET_RATIO: f64 = 1.05;
/// ...from this bound (ms)...
const FIRST_BOUND_MS: f64 = 0.01;
/// ...over this many buckets (up to about two hours).
const BUCKETS: usize = 400;

/// One request as `top` counts it (from a tap's request event).
#[derive(Clone, Debug, PartialEq)]
pub struct TopRequest {
    /// The caller: its workload, else its identity.
    pub source: String,
    /// Method.
    pub method: String,
    /// Path without its query.
    pub path: String,
    /// Response status; 0 when the client left first.
    pub status: u16,
    /// Latency, milliseconds.
    pub latency_ms: f64,
}

impl TopRequest {
    /// Reads a tap line; `None` for anything but a request event.
    pub fn from_event(event: &serde_json::Value) -> Option<Self> {
        if event["kind"] != "request" {
            return None;
        }
        let text = |key: &str| event[key].as_str().unwrap_or_default();
        let known = |value: &str| !value.is_empty() && value != "unknown";
        let source = [text("source_workload"), text("source_identity")]
            .into_iter()
            .find(|v| known(v))
            .unwrap_or("-");
        let path = text("path");
        Some(Self {
            source: source.to_owned(),
            method: text("method").to_owned(),
            path: path.split_once('?').map_or(path, |(p, _)| p).to_owned(),
            status: event["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0),
            latency_ms: event["latency_ms"].as_f64().unwrap_or(0.0),
        })
    }

    /// Answered, and not with a 5xx (Istio's and Linkerd's success).
    pub fn succeeded(&self) -> bool {
        (1..500).contains(&self.status)
    }
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopRow {
    /// The caller.
    pub source: String,
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Requests.
    pub count: u64,
    /// Of them, succeeded.
    pub successes: u64,
    /// `successes / count`.
    pub success_rate: f64,
    /// Median latency, milliseconds (from the row's histogram).
    pub latency_p50_ms: f64,
    /// Slowest, milliseconds.
    pub latency_max_ms: f64,
}

/// Counts of one (source, method, path).
struct Stats {
    count: u64,
    successes: u64,
    max_ms: f64,
    buckets: Box<[u32; BUCKETS]>,
}

impl Stats {
    fn new() -> Self {
        Self {
            count: 0,
            successes: 0,
            max_ms: 0.0,
            buckets: Box::new([0; BUCKETS]),
        }
    }

    fn add(&mut self, request: &TopRequest) {
        self.count += 1;
        self.successes += u64::from(request.succeeded());
        self.max_ms = self.max_ms.max(request.latency_ms);
        let slot = &mut self.buckets[bucket(request.latency_ms)];
        *slot = slot.saturating_add(1);
    }

    /// The upper bound of the bucket holding the median, never above the maximum.
    fn p50(&self) -> f64 {
        let half = self.count.div_ceil(2);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= half && seen > 0 {
                return upper_bound(i).min(self.max_ms);
            }
        }
        self.max_ms
    }
}

fn bucket(latency_ms: f64) -> usize {
    if latency_ms <= FIRST_BOUND_MS {
        return 0;
    }
    let i = (latency_ms / FIRST_BOUND_MS).ln() / BUCKET_RATIO.ln();
    (i.ceil() as usize).min(BUCKETS - 1)
}

fn upper_bound(bucket: usize) -> f64 {
    FIRST_BOUND_MS * BUCKET_RATIO.powi(bucket as i32)
}

/// The table being built.
#[derive(Default)]
pub struct Top {
    rows: HashMap<(String, String, String), Stats>,
    requests: u64,
}

impl Top {
    /// Counts one request.
    pub fn add(&mut self, request: &TopRequest) {
        self.requests += 1;
        let key = (
            request.source.clone(),
            request.method.clone(),
            request.path.clone(),
        );
        let key = if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&key) {
            (OTHER.to_owned(), OTHER.to_owned(), OTHER.to_owned())
        } else {
            key
        };
        self.rows.entry(key).or_insert_with(Stats::new).add(request);
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The rows, most requested first (ties by source, method, path).
    pub fn rows(&self) -> Vec<TopRow> {
        let mut rows: Vec<TopRow> = self
            .rows
            .iter()
            .map(|((source, method, path), stats)| TopRow {
                source: source.clone(),
                method: method.clone(),
                path: path.clone(),
                count: stats.count,
                successes: stats.successes,
                success_rate: stats.successes as f64 / stats.count.max(1) as f64,
                latency_p50_ms: stats.p50(),
                latency_max_ms: stats.max_ms,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.source, &a.method, &a.path).cmp(&(&b.source, &b.method, &b.path)))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, status: u16, latency_ms: f64) -> TopRequest {
        TopRequest {
            source: "client".into(),
            method: "GET".into(),
            path: path.into(),
            status,
            latency_ms,
        }
    }

    #[test]
    fn rows_count_successes_and_latency_most_requested_first() {
        let mut top = Top::default();
        for i in 0..30 {
            top.add(&request("/a", 200, f64::from(i + 1)));
        }
        for i in 0..20 {
            top.add(&request("/b", if i < 5 { 500 } else { 404 }, 2.0));
        }
        top.add(&request("/c", 0, 1.0));
        let rows = top.rows();
        assert_eq!(top.requests(), 51);
        let summary: Vec<(&str, u64, u64)> = rows
            .iter()
            .map(|r| (r.path.as_str(), r.count, r.successes))
            .collect();
        assert_eq!(summary, [("/a", 30, 30), ("/b", 20, 15), ("/c", 1, 0)]);
        assert_eq!(rows[1].success_rate, 0.75);
        assert_eq!(rows[0].latency_max_ms, 30.0);
        // The median of 1..=30 ms is 15: read from a bucket within 5% above it.
        let p50 = rows[0].latency_p50_ms;
        assert!((15.0..=15.0 * BUCKET_RATIO).contains(&p50), "{p50}");
        assert_eq!(rows[1].latency_p50_ms, 2.0, "capped at the maximum");
    }

    #[test]
    fn request_events_are_read_without_their_query_and_others_are_not() {
        let event = serde_json::json!({
            "kind": "request", "method": "GET", "path": "/b?status=500", "status": 500,
            "latency_ms": 1.5, "source_workload": "unknown",
            "source_identity": "spiffe://cluster.local/ns/shop/sa/client",
        });
        let read = TopRequest::from_event(&event).unwrap();
        assert_eq!(read.path, "/b");
        assert_eq!(read.source, "spiffe://cluster.local/ns/shop/sa/client");
        assert!(!read.succeeded());
        let connection = serde_json::json!({"kind": "connection", "phase": "open"});
        assert_eq!(TopRequest::from_event(&connection), None);
    }

    #[test]
    fn rows_past_the_bound_are_folded_into_one() {
        let mut top = Top::default();
        for i in 0..=MAX_ROWS {
            top.add(&request(&format!("/{i}"), 200, 1.0));
        }
        top.add(&request("/0", 200, 1.0));
        let rows = top.rows();
        assert_eq!(rows.len(), MAX_ROWS + 1);
        assert_eq!(rows[0].path, "/0");
        assert_eq!(rows[0].count, 2);
        assert!(rows.iter().any(|r| r.path == OTHER && r.count == 1));
    }
}
