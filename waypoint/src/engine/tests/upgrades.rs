//! Upgrade requests in the engine: never mirrored; a 101 carries the handle through which the
//! transport reports the bytes it relays, and the request is recorded (code 101, those bytes
//! as its body sizes) only when the response body ends, that is when the relay is over.

use std::sync::Arc;

use http_body_util::BodyExt;
use prometheus_registry::scrape;

use super::cfg::*;
use super::fake::Behavior;
use crate::engine::telemetry::count_of;
use crate::engine::{Target, UpgradedBytes, UpstreamClient};

/// The sum of `metric` over every series in `text`.
fn sum(text: &str, metric: &str) -> f64 {
    scrape::sum(&scrape::parse(text), metric, &[])
}

#[tokio::test]
async fn upgrades_are_not_mirrored_and_are_recorded_with_their_relayed_bytes() {
    let e = mirrored_to_v2();
    let fk = fake();
    fk.set(V1A_ADDR, Behavior::Status(101));
    fk.set(V1B_ADDR, Behavior::Status(101));
    let upstream: Arc<dyn UpstreamClient> = fk.clone();
    let target = Target {
        address: std::net::SocketAddr::new(VIP.parse().unwrap(), PORT),
    };
    let upgrade = request(
        "GET",
        "/chat",
        &[("connection", "Upgrade"), ("upgrade", "websocket")],
        "",
    );
    let response = e
        .handle(upstream, caller("web"), target.clone(), upgrade)
        .await;
    assert_eq!(response.status(), 101);
    let relayed = response
        .extensions()
        .get::<UpgradedBytes>()
        .cloned()
        .expect("a 101 carries the relay's byte counter");
    relayed.add(700, 660);
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[]),
        0,
        "recorded only when the upgraded connection ends"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();

    let text = e.runtime.render_metrics();
    assert_eq!(count_of(&text, &[("response_code", "101")]), 1);
    assert_eq!(sum(&text, "istio_request_bytes_sum"), 700.0);
    assert_eq!(
        sum(&text, "istio_response_bytes_sum"),
        (660 + body.len()) as f64
    );
    // Any other answer carries no counter, and is mirrored.
    fk.set(V1A_ADDR, Behavior::Status(200));
    fk.set(V1B_ADDR, Behavior::Status(200));
    let upstream: Arc<dyn UpstreamClient> = fk.clone();
    let plain = request("GET", "/chat", &[], "");
    let response = e.handle(upstream, caller("web"), target, plain).await;
    assert!(response.extensions().get::<UpgradedBytes>().is_none());
    // The plain request's copy arrives on its own task: once it has, the upgrade's would
    // have too.
    while !fk.calls().iter().any(|c| c.uid == V2) {
        tokio::task::yield_now().await;
    }
    let calls = fk.calls();
    let upgrades: Vec<_> = calls
        .iter()
        .filter(|c| c.headers.contains_key("upgrade"))
        .collect();
    assert_eq!(upgrades.len(), 1, "{calls:?}");
    assert_ne!(upgrades[0].uid, V2, "the upgrade went to v1 only");
    assert_eq!(calls.iter().filter(|c| c.uid == V2).count(), 1, "{calls:?}");
}
