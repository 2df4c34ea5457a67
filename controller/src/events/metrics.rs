//! What the Event writer counts: `controller_events_total{result}`, rendered on the admin
//! port's `/metrics` with the controller's other families.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_registry::text;

/// Counter: Event writes by `result` (see [`EventResult`]).
pub const EVENTS: &str = "controller_events_total";

/// What became of one Event the writer meant to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventResult {
    /// Created.
    Created,
    /// Its series updated: the problem persists.
    Updated,
    /// Refused by the rate limit (tried again on the next round).
    RateLimited,
    /// Not written: the memory of what was written is full (tried again on the next round).
    MemoryFull,
    /// The API server refused or failed the write (tried again on the next round).
    Failed,
}

impl EventResult {
    /// Every result, in the order rendered.
    pub const ALL: [EventResult; 5] = [
        EventResult::Created,
        EventResult::Updated,
        EventResult::RateLimited,
        EventResult::MemoryFull,
        EventResult::Failed,
    ];

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            EventResult::Created => "created",
            EventResult::Updated => "updated",
            EventResult::RateLimited => "rate_limited",
            EventResult::MemoryFull => "memory_full",
            EventResult::Failed => "failed",
        }
    }
}

/// Counts by result: a fixed set, so every series is shown from the start.
#[derive(Debug, Default)]
pub struct EventMetrics {
    counts: [AtomicU64; 5],
}

impl EventMetrics {
    /// Counts one write (or refusal) with `result`.
    pub fn count(&self, result: EventResult) {
        self.counts[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many were counted with `result`.
    pub fn get(&self, result: EventResult) -> u64 {
        self.counts[result as usize].load(Ordering::Relaxed)
    }

    /// Writes the family in the text exposition format.
    pub fn render(&self, out: &mut String) {
        text::family(
            out,
            EVENTS,
            "Kubernetes Events about problems of objects, by what became of them",
            "counter",
        );
        for result in EventResult::ALL {
            let labels = text::render_labels(&[("result", result.label(), "")]);
            let _ = writeln!(out, "{EVENTS}{labels} {}", self.get(result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_is_rendered_with_its_count() {
        let m = EventMetrics::default();
        m.count(EventResult::Created);
        m.count(EventResult::Created);
        m.count(EventResult::Failed);
        let mut out = String::new();
        m.render(&mut out);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "controller_events_total{result=\"created\"} 2",
                "controller_events_total{result=\"updated\"} 0",
                "controller_events_total{result=\"rate_limited\"} 0",
                "controller_events_total{result=\"memory_full\"} 0",
                "controller_events_total{result=\"failed\"} 1",
            ]
        );
    }
}
