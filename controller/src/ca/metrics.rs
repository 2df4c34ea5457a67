//! The CA's metrics (rendered on the admin port's `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_registry::{Registry, text};

/// Counter: certificates issued.
pub const ISSUED: &str = "controller_ca_certificates_issued_total";
/// Counter: certificate requests refused, labelled by `reason`.
pub const REFUSED: &str = "controller_ca_certificates_refused_total";

/// What the CA counts. Refusal reasons are a fixed set named in code.
#[derive(Default)]
pub struct CaMetrics {
    issued: AtomicU64,
    refused: Registry<&'static str, AtomicU64>,
}

impl CaMetrics {
    /// A certificate was issued.
    pub fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// A certificate request was refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        let label = |reason: &&str| text::render_labels(&[("reason", reason, "")]);
        self.refused
            .with(&reason, label, |n| n.fetch_add(1, Ordering::Relaxed));
    }

    /// Label sets refused because a family was at its bound.
    pub(crate) fn overflow(&self) -> u64 {
        self.refused.overflow()
    }

    /// Writes the CA families in the text exposition format.
    pub(crate) fn render(&self, out: &mut String) {
        text::family(out, ISSUED, "workload certificates issued", "counter");
        text::value(out, ISSUED, self.issued.load(Ordering::Relaxed));
        self.refused
            .render_counter(out, REFUSED, "certificate requests refused");
    }
}
