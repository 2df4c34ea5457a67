//! What `load` measures and how it reports it: per-worker tallies merged into
//! one report with status counts, replies per pod and latency percentiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// Key under `statuses` counting requests that got no HTTP response.
pub const ERROR_KEY: &str = "error";
/// How many distinct transport error messages a report keeps.
pub const MAX_ERROR_MESSAGES: usize = 5;

/// One worker's results; workers merge theirs at the end, so no locking
/// happens while requests are in flight.
#[derive(Debug, Default)]
pub struct Tally {
    statuses: BTreeMap<String, u64>,
    by_pod: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
    errors: Vec<String>,
}

impl Tally {
    /// Records an HTTP response; `pod` is the replier's `x-echo-pod`, if any.
    pub fn record_response(&mut self, status: StatusCode, pod: Option<&str>, latency: Duration) {
        *self
            .statuses
            .entry(status.as_u16().to_string())
            .or_default() += 1;
        if let Some(pod) = pod {
            *self.by_pod.entry(pod.to_string()).or_default() += 1;
        }
        self.latencies_ms.push(latency.as_secs_f64() * 1000.0);
    }

    /// Records a request that got no HTTP response (connect failure, reset,
    /// timeout), keeping the first few distinct messages.
    pub fn record_error(&mut self, message: String) {
        *self.statuses.entry(ERROR_KEY.to_string()).or_default() += 1;
        if self.errors.len() < MAX_ERROR_MESSAGES && !self.errors.contains(&message) {
            self.errors.push(message);
        }
    }

    /// Adds `other`'s results to this tally.
    pub fn merge(&mut self, other: Tally) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (pod, n) in other.by_pod {
            *self.by_pod.entry(pod).or_default() += n;
        }
        self.latencies_ms.extend(other.latencies_ms);
        for message in other.errors {
            if self.errors.len() < MAX_ERROR_MESSAGES && !self.errors.contains(&message) {
                self.errors.push(message);
            }
        }
    }

    /// The final report, for a run that took `elapsed`.
    pub fn into_report(mut self, elapsed: Duration) -> LoadReport {
        self.latencies_ms.sort_by(f64::total_cmp);
        let sorted = &self.latencies_ms;
        let requests = self.statuses.values().sum();
        let secs = elapsed.as_secs_f64();
        LoadReport {
            requests,
            statuses: self.statuses,
            errors: self.errors,
            by_pod: self.by_pod,
            latency_ms: LatencyMs {
                p50: round3(percentile(sorted, 50.0)),
                p90: round3(percentile(sorted, 90.0)),
                p99: round3(percentile(sorted, 99.0)),
                max: round3(sorted.last().copied().unwrap_or(0.0)),
            },
            duration_ms: round3(secs * 1000.0),
            rps: if secs > 0.0 {
                round3(requests as f64 / secs)
            } else {
                0.0
            },
        }
    }
}

/// The `p`-th percentile (0..=100) of ascending `sorted` values by the
/// nearest-rank method: the smallest value with at least p% of values at or
/// below it. 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Latency percentiles in milliseconds, over requests that got a response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The result of a `load` run; `--json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests sent (responses plus transport errors).
    pub requests: u64,
    /// Count per status code, as a string ("200"), plus "error".
    pub statuses: BTreeMap<String, u64>,
    /// The first few distinct transport error messages.
    pub errors: Vec<String>,
    /// Count of responses per replying pod (`x-echo-pod` header).
    pub by_pod: BTreeMap<String, u64>,
    /// Latency percentiles.
    pub latency_ms: LatencyMs,
    /// Wall time of the whole run.
    pub duration_ms: f64,
    /// Achieved requests per second.
    pub rps: f64,
}

impl LoadReport {
    /// Requests answered with `status`.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status.to_string()).copied().unwrap_or(0)
    }

    /// The human-readable form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "requests  {} in {:.3} s ({:.1} req/s)",
            self.requests,
            self.duration_ms / 1000.0,
            self.rps
        );
        let _ = writeln!(out, "statuses  {}", join_counts(&self.statuses));
        for message in &self.errors {
            let _ = writeln!(out, "error     {message}");
        }
        let l = &self.latency_ms;
        let _ = writeln!(
            out,
            "latency   p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            l.p50, l.p90, l.p99, l.max
        );
        if !self.by_pod.is_empty() {
            let _ = writeln!(out, "by pod    {}", join_counts(&self.by_pod));
        }
        out
    }
}

fn join_counts(counts: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join("  ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 90.0), 90.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let few = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&few, 50.0), 2.0);
        assert_eq!(percentile(&few, 90.0), 4.0);
    }

    #[test]
    fn merges_and_reports() {
        let mut a = Tally::default();
        for ms in [3, 1, 2] {
            a.record_response(StatusCode::OK, Some("p1"), Duration::from_millis(ms));
        }
        let mut b = Tally::default();
        b.record_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("p2"),
            Duration::from_millis(4),
        );
        b.record_response(StatusCode::OK, None, Duration::from_millis(5));
        for _ in 0..10 {
            b.record_error("connection refused".to_string());
        }
        a.merge(b);
        let report = a.into_report(Duration::from_secs(2));
        assert_eq!(report.requests, 15);
        assert_eq!(report.count(200), 4);
        assert_eq!(report.count(503), 1);
        assert_eq!(report.statuses[ERROR_KEY], 10);
        assert_eq!(report.errors, vec!["connection refused".to_string()]);
        assert_eq!(report.by_pod["p1"], 3);
        assert_eq!(report.by_pod["p2"], 1);
        assert_eq!(report.latency_ms.p50, 3.0);
        assert_eq!(report.latency_ms.max, 5.0);
        assert_eq!(report.rps, 7.5);
        let text = report.render_text();
        assert!(text.contains("200: 4  503: 1  error: 10"), "{text}");
        assert!(text.contains("p1: 3  p2: 1"), "{text}");
    }

    #[test]
    fn json_shape() {
        let report = Tally::default().into_report(Duration::ZERO);
        let json = serde_json::to_value(&report).unwrap();
        for key in ["requests", "statuses", "errors", "by_pod", "latency_ms"] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
        for key in ["p50", "p90", "p99", "max"] {
            assert!(json["latency_ms"].get(key).is_some(), "{key} missing");
        }
        assert_eq!(report.rps, 0.0);
    }
}
