//! The controller's metrics: the xDS server's, the CA's, the pipeline's and the Event
//! writer's, in one registry that the admin endpoint renders on `/metrics`.
//!
//! The proxies own a registry per instance because tests run several proxies in one process.
//! The controller is one per process, and its xDS server, CA and pipeline count into the
//! process's [`global`] registry rather than have one handed through every constructor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use prometheus_registry::text;

use crate::ca::metrics::CaMetrics;
use crate::events::EventMetrics;
use crate::leader::LeaderMetrics;
use crate::xds::metrics::XdsMetrics;

/// Counter: translations that failed (the last good snapshot stayed in force).
pub const TRANSLATION_FAILURES: &str = "controller_translation_failures_total";
/// Counter: label sets not counted because their family was at its bound.
pub const OVERFLOW: &str = "controller_metrics_series_overflow_total";

/// Everything the controller counts.
#[derive(Default)]
pub struct Metrics {
    /// The xDS server's.
    pub xds: XdsMetrics,
    /// The CA's.
    pub ca: CaMetrics,
    /// The Event writer's (shared with it).
    pub events: Arc<EventMetrics>,
    /// The leader election's (shared with it; rendered only while an election runs).
    pub leader: Arc<LeaderMetrics>,
    translation_failures: AtomicU64,
}

/// The process's registry.
pub fn global() -> &'static Arc<Metrics> {
    static METRICS: LazyLock<Arc<Metrics>> = LazyLock::new(Arc::default);
    &METRICS
}

impl Metrics {
    /// A translation failed (the last good snapshot stayed in force).
    pub fn translation_failed(&self) {
        self.translation_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.xds.render(&mut out);
        self.ca.render(&mut out);
        self.events.render(&mut out);
        self.leader.render(&mut out);
        text::family(
            &mut out,
            TRANSLATION_FAILURES,
            "translations that failed; the last good configuration stayed in force",
            "counter",
        );
        text::value(
            &mut out,
            TRANSLATION_FAILURES,
            self.translation_failures.load(Ordering::Relaxed),
        );
        text::family(
            &mut out,
            OVERFLOW,
            "label sets not counted: their family was at its bound",
            "counter",
        );
        text::value(&mut out, OVERFLOW, self.xds.overflow() + self.ca.overflow());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn renders_every_family_with_its_values() {
        let m = Metrics::default();
        m.xds.connected();
        m.xds.connected();
        m.xds.disconnected();
        let address = "type.googleapis.com/istio.workload.Address";
        m.xds.pushed(address, Duration::from_millis(12));
        m.xds.pushed(address, Duration::from_millis(500));
        m.xds.nacked(address);
        m.ca.issued();
        m.ca.refused("no_pod_on_node");
        m.translation_failed();
        m.events.count(crate::events::EventResult::RateLimited);
        let text = m.render();
        for line in [
            "# TYPE controller_xds_connected_clients gauge",
            "controller_xds_connected_clients 1",
            "controller_xds_pushes_total{type_url=\"type.googleapis.com/istio.workload.Address\"} 2",
            "# TYPE controller_xds_push_duration_seconds histogram",
            "controller_xds_push_duration_seconds_bucket{le=\"0.05\"} 1",
            "controller_xds_push_duration_seconds_bucket{le=\"+Inf\"} 2",
            "controller_xds_push_duration_seconds_sum 0.512",
            "controller_xds_push_duration_seconds_count 2",
            "controller_xds_nacks_total{type_url=\"type.googleapis.com/istio.workload.Address\"} 1",
            "controller_ca_certificates_issued_total 1",
            "controller_ca_certificates_refused_total{reason=\"no_pod_on_node\"} 1",
            "controller_translation_failures_total 1",
            "controller_events_total{result=\"rate_limited\"} 1",
            "controller_metrics_series_overflow_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn the_tracked_authority_s_expiries_are_shown_while_it_lives() {
        let m = Metrics::default();
        assert!(!m.render().contains(crate::ca::metrics::ROOT_EXPIRY));
        let ca = Arc::new(crate::ca::CertificateAuthority::open(None, "cluster.local").unwrap());
        m.ca.track(&ca);
        let expiries = ca.expiries().unwrap();
        let (serial, not_after) = &expiries.roots[0];
        let at = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let text = m.render();
        for line in [
            format!("citadel_server_root_cert_expiry_timestamp {at}"),
            format!("citadel_server_cert_chain_expiry_timestamp {at}"),
            format!("controller_ca_root_expiration_timestamp_seconds{{serial=\"{serial}\"}} {at}"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        // After a rotation the new root signs: it is the one that counts; the old one is
        // still listed by serial.
        // Longer-lived than the old root, so the earliest expiry would be the old one.
        let years = std::time::Duration::from_secs(20 * 365 * 86_400);
        ca.rotate(hbone::Authority::generate_root("cluster.local", years).unwrap())
            .unwrap();
        let rotated = ca.expiries().unwrap();
        assert_eq!(rotated.roots.len(), 2);
        let epoch =
            |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let new_at = epoch(rotated.roots[0].1);
        assert_ne!(new_at, at);
        let text = m.render();
        for line in [
            format!("citadel_server_root_cert_expiry_timestamp {new_at}"),
            format!("controller_ca_root_expiration_timestamp_seconds{{serial=\"{serial}\"}} {at}"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        drop(ca);
        assert!(
            !m.render().contains(crate::ca::metrics::ROOT_EXPIRY),
            "gone with the CA"
        );
    }

    #[test]
    fn client_chosen_type_urls_are_bounded() {
        let m = Metrics::default();
        for i in 0..1100 {
            m.xds.nacked(&format!("type.example/{i}"));
        }
        let text = m.render();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("controller_xds_nacks_total{"))
                .count(),
            1024
        );
        assert!(text.contains("\ncontroller_metrics_series_overflow_total 76\n"));
    }
}
