//! Faults, retries, timeouts, connection-pool limits, outlier detection and rate limits.

use std::sync::Arc;
use std::time::Duration;

use api::waypoint as pb;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::cfg::*;
use super::fake::Behavior;
use crate::engine::telemetry::count_of;
use crate::engine::{Engine, Runtime};

fn one_route(f: pb::Forward, traffic: Option<pb::TrafficPolicy>) -> pb::Waypoint {
    waypoint(
        vec![reviews(vec![route("r", vec![], f)])],
        vec![reviews_policy(traffic)],
        vec![],
    )
}

fn with_fault(fault: pb::Fault) -> pb::Waypoint {
    let mut r = route("faulty", vec![], forward(&[("v1", 1)]));
    r.fault = Some(fault);
    waypoint(vec![reviews(vec![r])], vec![reviews_policy(None)], vec![])
}

#[tokio::test]
async fn fault_abort_percentage() {
    let e = engine(&with_fault(pb::Fault {
        abort: Some(pb::FaultAbort {
            http_status: 503,
            grpc_status: 0,
            percentage: 50.0,
        }),
        ..Default::default()
    }));
    let f = fake();
    let n = 2000;
    let mut aborted = 0;
    for _ in 0..n {
        let a = get(&e, &f, "/", &[]).await;
        if a.status == 503 {
            assert_eq!(a.body, "fault filter abort");
            aborted += 1;
        }
    }
    // Half of 2000 has a standard deviation of ~22: six of them either side.
    assert!((866..=1134).contains(&aborted), "{aborted}");
    assert_eq!(f.calls().len(), n - aborted);
    let text = e.runtime.render_metrics();
    assert_eq!(count_of(&text, &[("response_flags", "FI")]), aborted as u64);
}

#[tokio::test(start_paused = true)]
async fn fault_delay_adds_latency() {
    let e = engine(&with_fault(pb::Fault {
        delay: Some(pb::FaultDelay {
            fixed_delay: secs(3),
            percentage: 100.0,
        }),
        ..Default::default()
    }));
    let f = fake();
    let start = Instant::now();
    let a = get(&e, &f, "/", &[]).await;
    assert_eq!(a.status, 200);
    // The paused clock only moves by the injected sleep.
    assert!(start.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "DI")]),
        1
    );
}

fn retrying(attempts: u32, on: &[&str], non_idempotent: bool) -> pb::Forward {
    let mut f = forward(&[("v2", 1)]);
    f.retry = Some(pb::RetryPolicy {
        attempts,
        retry_on: on.iter().map(|s| s.to_string()).collect(),
        retriable_status_codes: vec![503],
        backoff: None,
        retry_non_idempotent: non_idempotent,
    });
    f
}

#[tokio::test(start_paused = true)]
async fn retry_turns_503_into_success_but_not_for_post() {
    let e = engine(&one_route(
        retrying(2, &["retriable-status-codes"], false),
        None,
    ));
    let f = fake();
    f.set(V2_ADDR, Behavior::FailFirst(1, 503));
    let a = get(&e, &f, "/", &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(f.calls().len(), 2);

    let f = fake();
    f.set(V2_ADDR, Behavior::FailFirst(1, 503));
    let a = send(&e, &f, caller("web"), request("POST", "/", &[], "order")).await;
    assert_eq!(a.status, 503);
    assert_eq!(f.calls().len(), 1);

    // Asked to, POSTs are retried with their body.
    let e = engine(&one_route(retrying(2, &["5xx"], true), None));
    let f = fake();
    f.set(V2_ADDR, Behavior::FailFirst(2, 503));
    let a = send(&e, &f, caller("web"), request("POST", "/", &[], "order")).await;
    assert_eq!(a.status, 200);
    let calls = f.calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.body == "order"));

    // Exhausted retries answer with the last response, flagged URX.
    let f = fake();
    f.set(V2_ADDR, Behavior::Status(503));
    let a = get(&e, &f, "/", &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(f.calls().len(), 3);
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "URX")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn connect_failures_move_to_another_endpoint() {
    let e = engine(&one_route(
        {
            let mut f = forward(&[("v1", 1)]);
            f.retry = Some(pb::RetryPolicy {
                attempts: 2,
                retry_on: vec!["connect-failure".into()],
                ..Default::default()
            });
            f
        },
        None,
    ));
    let f = fake();
    f.set(V1A_ADDR, Behavior::Refuse);
    for _ in 0..20 {
        let a = send(&e, &f, caller("web"), request("POST", "/", &[], "x")).await;
        assert_eq!(a.status, 200);
    }
    f.set(V1B_ADDR, Behavior::Refuse);
    let a = get(&e, &f, "/", &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "UF,URX")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn route_and_attempt_timeouts_answer_504() {
    let mut f = forward(&[("v2", 1)]);
    f.timeout = secs(2);
    let e = engine(&one_route(f, None));
    let fk = fake();
    fk.set(V2_ADDR, Behavior::Hang);
    let start = Instant::now();
    let a = get(&e, &fk, "/", &[]).await;
    assert_eq!(a.status, 504);
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "UT")]),
        1
    );

    let mut f = retrying(1, &["gateway-error"], false);
    f.attempt_timeout = secs(1);
    let e = engine(&one_route(f, None));
    let fk = fake();
    fk.set(V2_ADDR, Behavior::Hang);
    let a = get(&e, &fk, "/", &[]).await;
    assert_eq!(a.status, 504);
    // The first attempt and one retry each ran out of time.
    assert_eq!(fk.calls().len(), 2);
}

/// A gRPC call to `reviews` with `headers`, as the `web` service account.
async fn grpc_call(
    e: &Arc<Engine>,
    fk: &Arc<super::fake::Fake>,
    headers: &[(&str, &str)],
) -> super::cfg::Answer {
    let mut all = vec![("content-type", "application/grpc")];
    all.extend_from_slice(headers);
    send(
        e,
        fk,
        caller("web"),
        request("POST", "/shop.Reviews/Get", &all, ""),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_grpc_callers_deadline_shorter_than_the_route_timeout_ends_with_deadline_exceeded() {
    let mut f = forward(&[("v2", 1)]);
    f.timeout = secs(10);
    let e = engine(&one_route(f, None));
    let fk = fake();
    fk.set(V2_ADDR, Behavior::Hang);
    let start = Instant::now();
    let a = grpc_call(&e, &fk, &[("grpc-timeout", "1500m")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["grpc-status"], "4");
    assert_eq!(a.headers["grpc-message"], "upstream request timeout");
    // On the paused clock: the caller's deadline, not the route's timeout.
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    let text = e.runtime.render_metrics();
    let deadline = [("grpc_response_status", "4"), ("response_flags", "UT")];
    assert_eq!(count_of(&text, &deadline), 1);

    // The route's timeout, when shorter, is a route timeout: UNAVAILABLE, as Envoy maps 504.
    let a = grpc_call(&e, &fk, &[("grpc-timeout", "1M")]).await;
    assert_eq!(a.headers["grpc-status"], "14");
    // Without a valid deadline, the route's timeout alone; plain HTTP ignores the header.
    let a = grpc_call(&e, &fk, &[("grpc-timeout", "soon")]).await;
    assert_eq!(a.headers["grpc-status"], "14");
    let start = Instant::now();
    let a = get(&e, &fk, "/", &[("grpc-timeout", "1S")]).await;
    assert_eq!(a.status, 504);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn connection_pool_overflow_is_shed_at_once() {
    let traffic = pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPool {
            max_connections: 1,
            max_pending_requests: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = engine(&one_route(forward(&[("v2", 1)]), Some(traffic)));
    let f = fake();
    let gate = Arc::new(Semaphore::new(0));
    f.set(V2_ADDR, Behavior::Gate(gate.clone()));
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let spawn = |tx: tokio::sync::mpsc::Sender<_>| {
        let (e, f) = (e.clone(), f.clone());
        tokio::spawn(async move {
            let a = get(&e, &f, "/", &[]).await;
            let _ = tx.send((a.status.as_u16(), a.body)).await;
        })
    };
    let first = spawn(tx.clone());
    // The first request holds the only slot once the endpoint has it.
    while f.calls().is_empty() {
        tokio::task::yield_now().await;
    }
    // Of the next two, one waits as pending and the other finds the queue full at once; the
    // gate is still closed, so the first answer to arrive must be the refusal.
    let others = [spawn(tx.clone()), spawn(tx.clone())];
    let (status, body) = rx.recv().await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(
        body,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    gate.add_permits(10);
    first.await.unwrap();
    for o in others {
        o.await.unwrap();
    }
    drop(tx);
    let mut rest = Vec::new();
    while let Some((status, _)) = rx.recv().await {
        rest.push(status);
    }
    assert_eq!(rest, [200, 200]);
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "UO")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn outlier_detection_ejects_and_returns() {
    let traffic = pb::TrafficPolicy {
        load_balancer: pb::LoadBalancer::RoundRobin as i32,
        outlier_detection: Some(pb::OutlierDetection {
            consecutive_5xx_errors: 3,
            consecutive_gateway_errors: 0,
            interval: secs(1),
            base_ejection_time: secs(30),
            max_ejection_percent: 100,
        }),
        ..Default::default()
    };
    let e = engine(&one_route(forward(&[("v1", 1)]), Some(traffic)));
    let f = fake();
    f.set(V1A_ADDR, Behavior::Status(500));
    // Round robin alternates, so v1-a sees three 500s within six requests and is ejected.
    for _ in 0..6 {
        get(&e, &f, "/", &[]).await;
    }
    let before = f.count_by_uid()[V1A];
    assert_eq!(before, 3);
    for _ in 0..20 {
        assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    }
    assert_eq!(f.count_by_uid()[V1A], before);
    tokio::time::advance(Duration::from_secs(30)).await;
    f.set(V1A_ADDR, Behavior::Status(200));
    for _ in 0..4 {
        get(&e, &f, "/", &[]).await;
    }
    assert!(
        f.count_by_uid()[V1A] > before,
        "v1-a is back after the base ejection time"
    );
}

#[tokio::test]
async fn no_endpoints_answer_503_uh() {
    let mut f = forward(&[("v1", 1)]);
    f.destinations[0].destination = Some(dest("ghost.shop.svc.cluster.local", ""));
    let e = engine(&one_route(f, None));
    let a = get(&e, &fake(), "/", &[]).await;
    assert_eq!(
        (a.status.as_u16(), &a.body[..]),
        (503, &b"no healthy upstream"[..])
    );
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "UH")]),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_answers_429_beyond_the_bucket() {
    let mut svc = reviews(vec![route("r", vec![], forward(&[("v1", 1)]))]);
    svc.rate_limit = Some(pb::LocalRateLimit {
        max_tokens: 5,
        tokens_per_fill: 5,
        fill_interval: secs(60),
        source: None,
    });
    let e = engine(&waypoint(vec![svc], vec![reviews_policy(None)], vec![]));
    let f = fake();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let a = get(&e, &f, "/", &[]).await;
        if a.status == 429 {
            assert_eq!(a.headers["x-envoy-ratelimited"], "true");
            assert_eq!(a.body, "local_rate_limited");
        }
        statuses.push(a.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    assert_eq!(
        count_of(&e.runtime.render_metrics(), &[("response_flags", "RL")]),
        3
    );
}

/// `reviews` (all three endpoints, round robin) where one 5xx ejects an endpoint for five
/// minutes; `detect: false` leaves outlier detection out.
fn ejecting(detect: bool) -> pb::Waypoint {
    one_route(
        forward(&[("", 1)]),
        Some(pb::TrafficPolicy {
            load_balancer: pb::LoadBalancer::RoundRobin as i32,
            outlier_detection: detect.then(|| pb::OutlierDetection {
                consecutive_5xx_errors: 1,
                consecutive_gateway_errors: 0,
                interval: secs(1),
                base_ejection_time: secs(300),
                max_ejection_percent: 50,
            }),
            ..Default::default()
        }),
    )
}

/// Requests v1-a serves out of `n` GETs.
async fn served_by_v1a(e: &Arc<Engine>, f: &Arc<super::fake::Fake>, n: usize) -> usize {
    let before = f.count_by_uid().get(V1A).copied().unwrap_or_default();
    for _ in 0..n {
        assert_eq!(get(e, f, "/", &[]).await.status, 200);
    }
    f.count_by_uid().get(V1A).copied().unwrap_or_default() - before
}

#[tokio::test(start_paused = true)]
async fn ejections_end_when_outlier_detection_is_removed_or_changed_but_not_otherwise() {
    let runtime = Runtime::new();
    let compile = |w: &pb::Waypoint| Arc::new(Engine::compile(w, runtime.clone()).unwrap());
    let f = fake();
    let eject_v1a = |e: Arc<Engine>| {
        let f = f.clone();
        async move {
            f.set(V1A_ADDR, Behavior::Status(500));
            // Round robin over three: one of three requests reaches v1-a.
            for _ in 0..3 {
                get(&e, &f, "/", &[]).await;
            }
            f.set(V1A_ADDR, Behavior::Status(200));
            assert_eq!(served_by_v1a(&e, &f, 9).await, 0, "v1-a is ejected");
        }
    };
    eject_v1a(compile(&ejecting(true))).await;

    // A new config version with the same outlier detection keeps the ejection.
    let mut unrelated = ejecting(true);
    unrelated.services[0].routes[0].name = "renamed".into();
    assert_eq!(served_by_v1a(&compile(&unrelated), &f, 9).await, 0);

    // Outlier detection removed: the DestinationRule's setting, or the DestinationRule.
    // Without a DestinationRule the default balancer picks at random: enough requests that
    // missing a healthy endpoint entirely is out of the question ((2/3)^60 ≈ 3e-11).
    assert!(served_by_v1a(&compile(&ejecting(false)), &f, 60).await > 0);
    eject_v1a(compile(&ejecting(true))).await;
    let mut no_rule = ejecting(true);
    no_rule.destinations.clear();
    assert!(served_by_v1a(&compile(&no_rule), &f, 60).await > 0);

    // Changed settings start afresh, as Envoy's rebuilt cluster does.
    eject_v1a(compile(&ejecting(true))).await;
    let mut longer = ejecting(true);
    if let Some(o) = longer.destinations[0]
        .traffic_policy
        .as_mut()
        .and_then(|t| t.outlier_detection.as_mut())
    {
        o.base_ejection_time = secs(600);
    }
    assert!(served_by_v1a(&compile(&longer), &f, 60).await > 0);
}
