//! The parts of a Prometheus registry every proxy of the mesh needs: series keyed by label set
//! with a bound on their number, and the text exposition format's label rendering, escaping and
//! family headers. ztunnel's TCP metrics and the waypoint's request metrics are both built on
//! it, so the two expose the same format and the same overflow behaviour.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// Most distinct label sets a registry keeps. Label values come from workload metadata, so the
/// number of series grows with the pairs of talking workloads; past this bound new label sets
/// are counted as overflow instead of growing memory without limit.
pub const MAX_SERIES: usize = 65_536;

/// One series: its label set, rendered once, and the values counted under it.
#[derive(Debug, Default)]
pub struct Series<V> {
    /// `{name="value",...}`, already escaped, so scrapes do not render it again.
    pub labels: String,
    /// The values.
    pub values: V,
}

/// Series of values `V` keyed by label sets `K`, at most [`MAX_SERIES`] of them.
pub struct Registry<K, V> {
    series: RwLock<HashMap<K, Arc<Series<V>>>>,
    overflow: AtomicU64,
    limit: usize,
}

impl<K: Hash + Eq + Clone, V: Default> Default for Registry<K, V> {
    fn default() -> Self {
        Self::with_limit(MAX_SERIES)
    }
}

impl<K: Hash + Eq + Clone, V: Default> Registry<K, V> {
    /// An empty registry keeping at most `limit` series.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            series: RwLock::new(HashMap::new()),
            overflow: AtomicU64::new(0),
            limit,
        }
    }

    /// The series of `key`, created on first use with the label set `render` gives; `None`
    /// (counted as overflow) when the registry is full.
    pub fn get(&self, key: &K, render: impl FnOnce(&K) -> String) -> Option<Arc<Series<V>>> {
        if let Some(series) = self.read().get(key) {
            return Some(series.clone());
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = map.get(key) {
            return Some(series.clone());
        }
        if map.len() >= self.limit {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let series = Arc::new(Series {
            labels: render(key),
            values: V::default(),
        });
        map.insert(key.clone(), series.clone());
        Some(series)
    }

    /// Every series, ordered by label set so that expositions are stable.
    pub fn sorted(&self) -> Vec<Arc<Series<V>>> {
        let mut series: Vec<Arc<Series<V>>> = self.read().values().cloned().collect();
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        series
    }

    /// Writes the counter `name` of the times a new label set was refused.
    pub fn render_overflow(&self, out: &mut String, name: &str, help: &str) {
        family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", self.overflow.load(Ordering::Relaxed));
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Arc<Series<V>>>> {
        // Counters stay meaningful after a panic elsewhere: recover the guard.
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes the `# HELP` and `# TYPE` lines of the metric family `name`.
pub fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders a label set, `{name="value",...}` in the order given; each entry is
/// `(name, value, default)`, the default standing in for an empty value (Istio reports
/// "unknown" rather than an empty label).
pub fn render_labels(pairs: &[(&str, &str, &str)]) -> String {
    let mut out = String::with_capacity(32 * pairs.len() + 2);
    out.push('{');
    for (i, (name, value, default)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = if value.is_empty() { default } else { value };
        let _ = write!(out, "{name}=\"");
        escape_into(&mut out, value);
        out.push('"');
    }
    out.push('}');
    out
}

/// Appends `value` escaped as the text exposition format wants label values.
pub fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_render_in_order_with_defaults_and_escapes() {
        let text = render_labels(&[
            ("a", "x\"y\\z\nw", "unknown"),
            ("b", "", "unknown"),
            ("c", "", ""),
        ]);
        assert_eq!(text, r#"{a="x\"y\\z\nw",b="unknown",c=""}"#);
        assert_eq!(render_labels(&[]), "{}");
    }

    #[test]
    fn series_are_created_once_and_bounded() {
        let registry: Registry<String, AtomicU64> = Registry::with_limit(2);
        let mut renders = 0;
        for key in ["b", "a", "b"] {
            let series = registry
                .get(&key.to_owned(), |k| {
                    renders += 1;
                    format!("{{k=\"{k}\"}}")
                })
                .unwrap();
            series.values.fetch_add(1, Ordering::Relaxed);
        }
        assert_eq!(renders, 2, "a label set is rendered when it is first seen");
        assert!(registry.get(&"c".to_owned(), |_| unreachable!()).is_none());
        let sorted = registry.sorted();
        let seen: Vec<(&str, u64)> = sorted
            .iter()
            .map(|s| (s.labels.as_str(), s.values.load(Ordering::Relaxed)))
            .collect();
        assert_eq!(seen, [("{k=\"a\"}", 1), ("{k=\"b\"}", 2)]);
        let mut out = String::new();
        registry.render_overflow(&mut out, "x_overflow_total", "Refused.");
        assert_eq!(
            out,
            "# HELP x_overflow_total Refused.\n# TYPE x_overflow_total counter\nx_overflow_total 1\n"
        );
    }
}
