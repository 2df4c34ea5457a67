//! What the election shows on `/metrics`: Kubernetes' own gauge for "this replica leads"
//! (`leader_election_master_status{name}`, as client-go's components export it; Istio has
//! none) and how often leadership changed here.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_registry::text;

/// Gauge: 1 while this replica holds the Lease `name`, else 0 (Kubernetes' name).
pub const LEADER_STATUS: &str = "leader_election_master_status";
/// Counter: leadership changes of this replica, by `change` (`acquired`, `lost`).
pub const TRANSITIONS: &str = "controller_leader_transitions_total";

/// The election's metrics; nothing is rendered until an election runs.
#[derive(Debug, Default)]
pub struct LeaderMetrics {
    lease: OnceLock<String>,
    leading: AtomicBool,
    acquired: AtomicU64,
    lost: AtomicU64,
}

impl LeaderMetrics {
    /// An election for the Lease `name` runs in this process.
    pub fn elect(&self, name: &str) {
        let _ = self.lease.set(name.to_string());
    }

    /// This replica took the Lease.
    pub fn acquired(&self) {
        self.leading.store(true, Ordering::Relaxed);
        self.acquired.fetch_add(1, Ordering::Relaxed);
    }

    /// This replica stopped leading.
    pub fn lost(&self) {
        self.leading.store(false, Ordering::Relaxed);
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this replica leads, as the gauge shows it.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Writes both families, when an election runs.
    pub fn render(&self, out: &mut String) {
        let Some(lease) = self.lease.get() else {
            return;
        };
        text::family(
            out,
            LEADER_STATUS,
            "whether this replica holds the lease: 1 leader, 0 follower; name: the Lease",
            "gauge",
        );
        let labels = text::render_labels(&[("name", lease, "")]);
        let _ = writeln!(
            out,
            "{LEADER_STATUS}{labels} {}",
            u8::from(self.is_leader())
        );
        text::family(
            out,
            TRANSITIONS,
            "times this replica acquired or lost the controller's Lease",
            "counter",
        );
        for (change, count) in [("acquired", &self.acquired), ("lost", &self.lost)] {
            let labels = text::render_labels(&[("change", change, "")]);
            let _ = writeln!(
                out,
                "{TRANSITIONS}{labels} {}",
                count.load(Ordering::Relaxed)
            );
        }
    }
}
