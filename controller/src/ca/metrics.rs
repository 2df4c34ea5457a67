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

/// Gauge: the phase of a root rotation: 0 none, 1 new root published beside the old one,
/// 3 new root signing while proxies renew (see `meshctl ca status`).
pub const ROTATION_PHASE: &str = "controller_ca_rotation_phase";
/// Gauge: when the rotation's current phase began, seconds since the epoch.
pub const ROTATION_SINCE: &str = "controller_ca_rotation_phase_start_timestamp_seconds";
/// Counter: root rotations completed (the old root dropped).
pub const ROTATIONS: &str = "controller_ca_root_rotations_completed_total";
/// Gauge: proxies subscribed to the trust bundle, by `state`: `current` (ACKed the version
/// served) or `stale`.
pub const BUNDLE_PROXIES: &str = "controller_trust_bundle_proxies";

/// What the CA counts. Refusal reasons are a fixed set named in code.
#[derive(Default)]
pub struct CaMetrics {
    issued: AtomicU64,
    refused: Registry<&'static str, AtomicU64>,
    /// The authority whose expiries are shown; weak, so that the registry (process-wide)
    /// never keeps a stopped controller's CA alive.
    authority: Mutex<Weak<CertificateAuthority>>,
    rotation_phase: AtomicU64,
    rotation_since: AtomicU64,
    rotations: AtomicU64,
    /// Proxies holding the served trust bundle and those that do not; unknown (not shown)
    /// while the snapshot does not carry the latest bundle yet.
    bundle_proxies: Mutex<Option<(usize, usize)>>,
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

    /// The rotation's phase (as [`ROTATION_PHASE`] numbers it), when it began, and how many
    /// subscribed proxies hold the served trust bundle (current, stale), if known.
    pub fn rotation_state(&self, phase: u64, since: u64, proxies: Option<(usize, usize)>) {
        self.rotation_phase.store(phase, Ordering::Relaxed);
        self.rotation_since.store(since, Ordering::Relaxed);
        *self
            .bundle_proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = proxies;
    }

    /// A root rotation completed.
    pub fn rotation_completed(&self) {
        self.rotations.fetch_add(1, Ordering::Relaxed);
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
        self.render_rotation(out);
    }

    fn render_rotation(&self, out: &mut String) {
        text::family(
            out,
            ROTATION_PHASE,
            "phase of the root rotation (0: none)",
            "gauge",
        );
        text::value(
            out,
            ROTATION_PHASE,
            self.rotation_phase.load(Ordering::Relaxed),
        );
        text::family(
            out,
            ROTATION_SINCE,
            "when the rotation's phase began",
            "gauge",
        );
        text::value(
            out,
            ROTATION_SINCE,
            self.rotation_since.load(Ordering::Relaxed),
        );
        text::family(out, ROTATIONS, "root rotations completed", "counter");
        text::value(out, ROTATIONS, self.rotations.load(Ordering::Relaxed));
        let proxies = *self
            .bundle_proxies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((current, stale)) = proxies {
            text::family(
                out,
                BUNDLE_PROXIES,
                "proxies by whether they hold the served trust bundle",
                "gauge",
            );
            for (state, n) in [("current", current), ("stale", stale)] {
                let labels = text::render_labels(&[("state", state, "")]);
                let _ = writeln!(out, "{BUNDLE_PROXIES}{labels} {n}");
            }
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
