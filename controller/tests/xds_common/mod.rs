//! Shared by the xDS and CA tests: the controller endpoint with the callers these tests speak
//! as, and a process-wide metrics recorder to read counters from.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use controller::ca::CertificateAuthority;
use controller::translate::Published;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use test_support::control_plane::Controller;

pub const TD: &str = "cluster.local";
pub const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";

/// Installs a process-wide Prometheus recorder once, so tests can read counters.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The sum of a counter's samples (all label sets) in the rendered metrics.
pub fn counter(name: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts xDS + CA on an ephemeral loopback port, serving `snapshot`: the node proxies of
/// node1 (`zt-node1`) and node2 (`zt-node2`), and an app on node1 (`app`), are callers.
pub async fn start(snapshot: Published, ca: CertificateAuthority) -> Controller {
    metrics();
    Controller::builder()
        .ca(ca)
        .debounce(Duration::from_millis(20))
        .snapshot(snapshot)
        .token("zt-node1", ZTUNNEL, Some("node1"))
        .token("zt-node2", ZTUNNEL, Some("node2"))
        .token("app", "spiffe://cluster.local/ns/app/sa/web", Some("node1"))
        .start()
        .await
}
