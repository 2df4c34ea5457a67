//! Shared by the xDS and CA tests: the controller endpoint with the callers these tests speak
//! as, and a process-wide metrics recorder to read counters from.

#![allow(dead_code)]

use std::time::Duration;

use controller::ca::CertificateAuthority;
use controller::translate::Published;
use test_support::control_plane::Controller;

pub const TD: &str = "cluster.local";
pub const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";

/// The sum of a counter's samples (all label sets) in the controller's rendered metrics
/// (one registry per process, shared by every server a test starts).
pub fn counter(name: &str) -> f64 {
    controller::metrics::global()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts xDS + CA on an ephemeral loopback port, serving `snapshot`: the node proxies of
/// node1 (`zt-node1`) and node2 (`zt-node2`), and an app on node1 (`app`), are callers.
pub async fn start(snapshot: Published, ca: CertificateAuthority) -> Controller {
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
