//! The CA's metrics (rendered on the admin port's `/metrics`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_registry::{Registry, text};

use super::authority::{CertificateAuthority, Expiries};

/// Counter: certificates issued.
pub const ISSUED: &str = "controller_ca_certificates_issued_total";
/// Counter: certificate requests refused, labelled by `reason`.
pub const REFUSED: &str = "controller_ca_certificates_refused_total";

/// Gauge (Istio's name): when the current root expires, seconds since the epoch: the first of
/// the bundle, which signs (a rotation puts the new root first and keeps the old ones after
/// it, so an old root past its end never keeps the alert on).
pub const ROOT_EXPIRY: &str = "citadel_server_root_cert_expiry_timestamp";
/// Gauge (Istio's name): when the signing certificate (a plugged-in intermediate, else the
/// root) expires, seconds since the epoch.
pub const CHAIN_EXPIRY: &str = "citadel_server_cert_chain_expiry_timestamp";
/// Gauge: when each published root expires, by `serial`, seconds since the epoch (two during
/// a root rotation).
pub const ROOTS: &str = "controller_ca_root_expiration_timestamp_seconds";

/// What the CA counts. Refusal reasons are a fixed set named in code.
#[derive(Default)]
pub struct CaMetrics {
    issued: AtomicU64,
    refused: Registry<&'static str, AtomicU64>,
    /// The authority whose expiries are shown; weak, so that the registry (process-wide)
    /// never keeps a stopped controller's CA alive.
    authority: Mutex<Weak<CertificateAuthority>>,
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

    /// Shows the expiries of `authority` from now on.
    pub fn track(&self, authority: &Arc<CertificateAuthority>) {
        *self.authority.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(authority);
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
        let authority = self
            .authority
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        if let Some(expiries) = authority.and_then(|a| a.expiries().ok()) {
            render_expiries(out, &expiries);
        }
    }
}

fn render_expiries(out: &mut String, expiries: &Expiries) {
    let current_root = expiries.roots.first().map(|(_, at)| *at);
    for (name, help, at) in [
        (ROOT_EXPIRY, "when the current root expires", current_root),
        (
            CHAIN_EXPIRY,
            "when the signing certificate expires",
            expiries.signer,
        ),
    ] {
        if let Some(at) = at {
            text::family(out, name, help, "gauge");
            text::value(out, name, epoch(at));
        }
    }
    text::family(out, ROOTS, "when each published root expires", "gauge");
    for (serial, at) in &expiries.roots {
        let labels = text::render_labels(&[("serial", serial, "")]);
        let _ = writeln!(out, "{ROOTS}{labels} {}", epoch(*at));
    }
}

/// Seconds since the epoch (0 before it: no CA certificate starts before 1970).
fn epoch(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
