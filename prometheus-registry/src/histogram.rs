//! A histogram of fixed buckets kept in atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Observations counted in `N` buckets of fixed upper bounds, with their sum and count.
///
/// Every field is an atomic updated with relaxed ordering: an observation is a few additions,
/// with no lock, and concurrent observers never wait for each other or for a scrape. The sum
/// is kept as an integer number of `1 / scale` units (thousandths of a millisecond for request
/// durations, nanoseconds for durations in seconds), which an atomic can add exactly.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    buckets: [AtomicU64; N],
    scale: f64,
    sum: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram of the buckets `bounds` (ascending upper bounds; `+Inf` is implied)
    /// whose sum keeps values to `1 / scale`.
    pub const fn new(bounds: &'static [f64; N], scale: f64) -> Self {
        Self {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            scale,
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `value`.
    // Three calls per waypoint request; left to itself the compiler kept this out of line at
    // a cost of some ten instructions per request (docs/benchmarks.md).
    #[inline]
    pub fn observe(&self, value: f64) {
        // Only the first bucket that holds the value is counted: buckets are made cumulative
        // when rendered, so an observation costs one addition instead of one per bucket.
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum
            .fetch_add((value * self.scale) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples of the series `labels` (a rendered
    /// label set, `{a="b",...}`, or empty for a family without labels).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        // The bucket label goes inside the braces, after the series' own labels.
        let inner = labels
            .strip_prefix('{')
            .and_then(|l| l.strip_suffix('}'))
            .filter(|l| !l.is_empty());
        let separator = if inner.is_some() { "," } else { "" };
        let inner = inner.unwrap_or("");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{inner}{separator}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
        let _ = writeln!(
            out,
            "{name}_bucket{{{inner}{separator}le=\"+Inf\"}} {count}"
        );
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum{labels} {sum}");
        let _ = writeln!(out, "{name}_count{labels} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.5, 1.0, 1800000.0];

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::new(&BOUNDS, 1000.0);
        for v in [0.25, 0.75, 1.0, 5.0, 4e6] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "d", "{a=\"b\"}");
        assert_eq!(
            out,
            "d_bucket{a=\"b\",le=\"0.5\"} 1\n\
             d_bucket{a=\"b\",le=\"1\"} 3\n\
             d_bucket{a=\"b\",le=\"1800000\"} 4\n\
             d_bucket{a=\"b\",le=\"+Inf\"} 5\n\
             d_sum{a=\"b\"} 4000007\n\
             d_count{a=\"b\"} 5\n"
        );
    }

    #[test]
    fn renders_without_labels() {
        let h = Histogram::new(&BOUNDS, 1e9);
        h.observe(0.0012345);
        let mut out = String::new();
        h.render(&mut out, "s", "");
        assert_eq!(
            out,
            "s_bucket{le=\"0.5\"} 1\n\
             s_bucket{le=\"1\"} 1\n\
             s_bucket{le=\"1800000\"} 1\n\
             s_bucket{le=\"+Inf\"} 1\n\
             s_sum 0.0012345\n\
             s_count 1\n"
        );
    }
}
