//! The xDS server's metrics (rendered on the admin port's `/metrics`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_registry::{Histogram, Registry, text};

/// Gauge: xDS streams currently open.
pub const CONNECTED_CLIENTS: &str = "controller_xds_connected_clients";
/// Counter: responses sent, labelled by `type_url`.
pub const PUSHES: &str = "controller_xds_pushes_total";
/// Histogram: seconds from noticing a snapshot change (or a request) to the response being
/// queued for the client, debounce included.
pub const PUSH_SECONDS: &str = "controller_xds_push_duration_seconds";
/// Counter: responses a client rejected, labelled by `type_url`.
pub const NACKS: &str = "controller_xds_nacks_total";

/// Buckets of [`PUSH_SECONDS`]: explicit buckets make the push latency a histogram, which
/// aggregates across replicas (a summary does not).
const PUSH_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Push durations are summed in nanoseconds.
const NANOS: f64 = 1e9;
/// Most `type_url` values counted. Clients name the types they subscribe to, so the label
/// values are theirs to choose: past this bound new ones are counted as overflow.
const MAX_TYPE_URLS: usize = 1024;

/// What the xDS server counts.
pub struct XdsMetrics {
    connected: AtomicI64,
    pushes: Registry<String, AtomicU64>,
    push_seconds: Histogram<{ PUSH_BUCKETS.len() }>,
    nacks: Registry<String, AtomicU64>,
}

impl Default for XdsMetrics {
    fn default() -> Self {
        Self {
            connected: AtomicI64::new(0),
            pushes: Registry::with_limit(MAX_TYPE_URLS),
            push_seconds: Histogram::new(&PUSH_BUCKETS, NANOS),
            nacks: Registry::with_limit(MAX_TYPE_URLS),
        }
    }
}

impl XdsMetrics {
    /// A stream opened.
    pub fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream ended.
    pub fn disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// A response of `type_url` was queued, `took` after the change (or request) it answers.
    pub fn pushed(&self, type_url: &str, took: Duration) {
        self.pushes.with(type_url, type_url_label, |n| {
            n.fetch_add(1, Ordering::Relaxed)
        });
        self.push_seconds.observe(took.as_secs_f64());
    }

    /// A client rejected a response of `type_url`.
    pub fn nacked(&self, type_url: &str) {
        self.nacks.with(type_url, type_url_label, |n| {
            n.fetch_add(1, Ordering::Relaxed)
        });
    }

    /// Label sets refused because a family was at its bound.
    pub(crate) fn overflow(&self) -> u64 {
        self.pushes.overflow() + self.nacks.overflow()
    }

    /// Writes the xDS families in the text exposition format.
    pub(crate) fn render(&self, out: &mut String) {
        text::family(
            out,
            CONNECTED_CLIENTS,
            "xDS streams currently open",
            "gauge",
        );
        text::value(
            out,
            CONNECTED_CLIENTS,
            self.connected.load(Ordering::Relaxed),
        );
        self.pushes
            .render_counter(out, PUSHES, "delta xDS responses sent");
        text::family(
            out,
            PUSH_SECONDS,
            "time from a config change to its push being queued, debounce included",
            "histogram",
        );
        self.push_seconds.render(out, PUSH_SECONDS, "");
        self.nacks
            .render_counter(out, NACKS, "delta xDS responses rejected by clients");
    }
}

fn type_url_label(type_url: &str) -> String {
    text::render_labels(&[("type_url", type_url, "")])
}
