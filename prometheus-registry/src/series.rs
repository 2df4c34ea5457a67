//! Series keyed by label set, with a bound on their number.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::text;

/// Most distinct label sets a registry keeps by default. Label values come from workload
/// metadata, so the number of series grows with the pairs of talking workloads; past this
/// bound new label sets are counted as overflow instead of growing memory without limit.
pub const MAX_SERIES: usize = 65_536;

/// One series: its label set, rendered once, and the values counted under it.
#[derive(Debug, Default)]
pub struct Series<V> {
    /// `{name="value",...}`, already escaped, so scrapes do not render it again; empty for
    /// the one series of a family without labels.
    pub labels: String,
    /// The values.
    pub values: V,
}

/// Series of values `V` keyed by label sets `K`, at most a bound of them.
///
/// `V` usually holds the values of several metric families that share their labels (a
/// connection's opened and closed counts and byte totals), so that one lookup serves them all.
pub struct Registry<K, V> {
    series: RwLock<HashMap<K, Arc<Series<V>>>>,
    overflow: AtomicU64,
    limit: usize,
}

impl<K: Hash + Eq, V: Default> Default for Registry<K, V> {
    fn default() -> Self {
        Self::with_limit(MAX_SERIES)
    }
}

impl<K: Hash + Eq, V: Default> Registry<K, V> {
    /// An empty registry keeping at most `limit` series.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            series: RwLock::new(HashMap::new()),
            overflow: AtomicU64::new(0),
            limit,
        }
    }

    /// Runs `update` on the values of `key`'s series, created on first use with the label
    /// set `render` gives; `None` (counted as overflow) when the registry is full.
    ///
    /// This is the hot path: an existing series is updated under the map's read lock, with no
    /// reference count taken (two atomic operations fewer than [`Registry::get`]). `key` may
    /// be a borrowed form of the key (`&str` for `String` keys), so that updating an existing
    /// series allocates nothing.
    pub fn with<Q, R>(
        &self,
        key: &Q,
        render: impl FnOnce(&Q) -> String,
        update: impl FnOnce(&V) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(series) = self.read().get(key) {
            return Some(update(&series.values));
        }
        self.create(key, render)
            .map(|series| update(&series.values))
    }

    /// The series of `key`, created on first use with the label set `render` gives; `None`
    /// (counted as overflow) when the registry is full. For a caller that keeps the series;
    /// [`Registry::with`] is cheaper for one update.
    pub fn get<Q>(&self, key: &Q, render: impl FnOnce(&Q) -> String) -> Option<Arc<Series<V>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(series) = self.read().get(key) {
            return Some(series.clone());
        }
        self.create(key, render)
    }

    /// The series of `key`, created unless the registry is full; under the write lock, so a
    /// label set is rendered and inserted once however many threads see it first.
    fn create<Q>(&self, key: &Q, render: impl FnOnce(&Q) -> String) -> Option<Arc<Series<V>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
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
        map.insert(key.to_owned(), series.clone());
        Some(series)
    }

    /// Every series, ordered by label set so that expositions are stable.
    pub fn sorted(&self) -> Vec<Arc<Series<V>>> {
        let mut series: Vec<Arc<Series<V>>> = self.read().values().cloned().collect();
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        series
    }

    /// How many times a new label set was refused because the registry was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Writes the counter `name` of the times a new label set was refused.
    pub fn render_overflow(&self, out: &mut String, name: &str, help: &str) {
        text::family(out, name, help, "counter");
        let _ = writeln!(out, "{name} {}", self.overflow());
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Arc<Series<V>>>> {
        // Counters stay meaningful after a panic elsewhere: recover the guard.
        self.series.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq> Registry<K, AtomicU64> {
    /// Writes the counter family `name`, one sample per series, ordered by label set.
    pub fn render_counter(&self, out: &mut String, name: &str, help: &str) {
        text::family(out, name, help, "counter");
        samples(out, name, &self.sorted(), |n| n.load(Ordering::Relaxed));
    }
}

/// Writes one sample of `name` per series, in the order given, its value picked from the
/// series' values: `name{labels} value`.
pub fn samples<V, T: Display>(
    out: &mut String,
    name: &str,
    series: &[Arc<Series<V>>],
    value: impl Fn(&V) -> T,
) {
    for s in series {
        let _ = writeln!(out, "{name}{} {}", s.labels, value(&s.values));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_created_once_and_bounded() {
        let registry: Registry<String, AtomicU64> = Registry::with_limit(2);
        let mut renders = 0;
        let mut render = |k: &str| {
            renders += 1;
            format!("{{k=\"{k}\"}}")
        };
        let b = registry.get("b", &mut render).unwrap();
        b.values.fetch_add(1, Ordering::Relaxed);
        for key in ["a", "b"] {
            let added = registry.with(key, &mut render, |v| v.fetch_add(1, Ordering::Relaxed));
            assert!(added.is_some());
        }
        assert_eq!(renders, 2, "a label set is rendered when it is first seen");
        assert!(registry.get("c", |_| unreachable!()).is_none());
        assert!(registry.with("c", |_| unreachable!(), |_| ()).is_none());
        assert_eq!(registry.overflow(), 2);
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
            "# HELP x_overflow_total Refused.\n# TYPE x_overflow_total counter\nx_overflow_total 2\n"
        );
        out.clear();
        registry.render_counter(&mut out, "x_total", "Counted.");
        assert_eq!(
            out,
            "# HELP x_total Counted.\n# TYPE x_total counter\nx_total{k=\"a\"} 1\nx_total{k=\"b\"} 2\n"
        );
    }

    #[test]
    fn samples_follow_their_series() {
        let series = [
            Arc::new(Series {
                labels: "{k=\"a\"}".to_owned(),
                values: 1u64,
            }),
            Arc::new(Series {
                labels: String::new(),
                values: 2u64,
            }),
        ];
        let mut out = String::new();
        text::family(&mut out, "x_total", "Things.", "counter");
        samples(&mut out, "x_total", &series, |v| *v * 10);
        text::value(&mut out, "y", -1);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{k=\"a\"} 10\nx_total 20\ny -1\n"
        );
    }
}
