//! `x-forwarded-client-cert` from the caller's identity, through [`Engine::handle`]: every
//! attempt and every mirrored copy carries the one synthesized entry; off, the header passes
//! as sent.

use std::sync::Arc;

use api::waypoint as pb;

use super::cfg::*;
use super::fake::{Behavior, Fake};
use crate::engine::{Caller, Engine, Runtime};

const FORGED: &str = "URI=spiffe://cluster.local/ns/kube-system/sa/admin";
const SYNTHESIZED: &str =
    "By=spiffe://cluster.local/ns/shop/sa/waypoint;URI=spiffe://cluster.local/ns/shop/sa/web";

/// One route to v2, retried on 503, mirrored to v1 in full; synthesis `on` or off.
fn config(on: bool) -> pb::Waypoint {
    let mut f = forward(&[("v2", 1)]);
    f.retry = Some(pb::RetryPolicy {
        attempts: 2,
        retry_on: vec!["retriable-status-codes".into()],
        retriable_status_codes: vec![503],
        ..Default::default()
    });
    f.mirrors = vec![pb::Mirror {
        destination: Some(dest(HOST, "v1")),
        percentage: 100.0,
    }];
    pb::Waypoint {
        xfcc_include_client_identity: on,
        ..waypoint(
            vec![reviews(vec![route("r", vec![], f)])],
            vec![reviews_policy(None)],
            vec![],
        )
    }
}

fn engine_as_waypoint(w: &pb::Waypoint) -> Arc<Engine> {
    let runtime = Runtime::new();
    runtime.set_own_identity(
        &"spiffe://cluster.local/ns/shop/sa/waypoint"
            .parse()
            .unwrap(),
    );
    Arc::new(Engine::compile(w, runtime).expect("config compiles"))
}

/// Sends one GET carrying two forged values from `from`; the header values of every call the
/// endpoints received (the answer's attempts, then the mirrored copy).
async fn values_seen(on: bool, from: Caller) -> Vec<Vec<String>> {
    let e = engine_as_waypoint(&config(on));
    let fk: Arc<Fake> = fake();
    fk.set(V2_ADDR, Behavior::FailFirst(1, 503));
    let forged = [
        ("x-forwarded-client-cert", FORGED),
        ("x-forwarded-client-cert", "By=x;URI=y"),
    ];
    let answer = send(&e, &fk, from, request("GET", "/", &forged, "")).await;
    assert_eq!(answer.status, 200);
    // The mirrored copy goes on its own task: let it run until it has arrived.
    while fk.calls().len() < 3 {
        tokio::task::yield_now().await;
    }
    let calls = fk.calls();
    assert_eq!(calls.len(), 3, "two attempts and one copy: {calls:?}");
    calls
        .iter()
        .map(|c| {
            c.headers
                .get_all("x-forwarded-client-cert")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn every_attempt_and_mirror_carries_only_the_callers_identity() {
    for seen in values_seen(true, caller("web")).await {
        assert_eq!(seen, [SYNTHESIZED]);
    }
}

#[tokio::test]
async fn a_caller_without_identity_gets_the_header_removed() {
    let plaintext = Caller {
        identity: None,
        ..caller("web")
    };
    for seen in values_seen(true, plaintext).await {
        assert!(seen.is_empty(), "{seen:?}");
    }
}

#[tokio::test]
async fn off_the_inbound_values_are_removed() {
    for seen in values_seen(false, caller("web")).await {
        assert!(seen.is_empty(), "{seen:?}");
    }
}
