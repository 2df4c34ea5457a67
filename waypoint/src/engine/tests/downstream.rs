//! Faults of the client's own making (a malformed body, a client that leaves, a body too slow
//! to arrive) are answered for the client and never count against the upstream: no outlier
//! ejection, no retry. Faults of the upstream's making still count.
//!
//! The bodies come from hyper and h2 as the waypoint's transport serves them (over in-memory
//! connections), so the errors judged are the ones real clients cause.

use std::convert::Infallible;
use std::sync::Arc;

use api::waypoint as pb;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::cfg::*;
use super::fake::{Behavior, Fake};
use crate::engine::downstream::scripted;
use crate::engine::telemetry::count_of;
use crate::engine::{BoxError, Engine, Target, UpstreamClient};

/// Rounds of bad requests: each would eject an endpoint if it counted.
const ROUNDS: usize = 10;

/// One gateway error or 5xx ejects an endpoint for 30 s, at most half of them; round robin.
fn outlier_policy() -> pb::TrafficPolicy {
    pb::TrafficPolicy {
        load_balancer: pb::LoadBalancer::RoundRobin as i32,
        outlier_detection: Some(pb::OutlierDetection {
            consecutive_5xx_errors: 1,
            consecutive_gateway_errors: 1,
            interval: secs(1),
            base_ejection_time: secs(30),
            max_ejection_percent: 50,
        }),
        ..Default::default()
    }
}

/// `reviews` v1 (two endpoints) under [`outlier_policy`], its route edited by `edit`.
fn guarded(edit: impl FnOnce(&mut pb::Forward)) -> Arc<Engine> {
    let mut f = forward(&[("v1", 1)]);
    edit(&mut f);
    engine(&waypoint(
        vec![reviews(vec![route("r", vec![], f)])],
        vec![reviews_policy(Some(outlier_policy()))],
        vec![],
    ))
}

/// Retries on resets, 5xx and timeouts, even for POSTs.
fn retried(f: &mut pb::Forward) {
    f.retry = Some(pb::RetryPolicy {
        attempts: 2,
        retry_on: vec!["reset".into(), "5xx".into(), "gateway-error".into()],
        retry_non_idempotent: true,
        ..Default::default()
    });
}

/// Whether both v1 endpoints are in rotation: 20 GETs reach each of them.
async fn both_in_rotation(e: &Arc<Engine>, f: &Arc<Fake>) -> bool {
    let before = f.count_by_uid();
    for _ in 0..20 {
        get(e, f, "/", &[]).await;
    }
    let after = f.count_by_uid();
    let grew = |uid: &str| after.get(uid) > before.get(uid).or(Some(&0));
    grew(V1A) && grew(V1B)
}

/// Serves one HTTP/1.1 or HTTP/2 connection into the engine, as the transport does; the task
/// ends when the connection does, by which time every request on it is recorded.
fn serve(e: &Arc<Engine>, f: &Arc<Fake>, io: DuplexStream, http2: bool) -> JoinHandle<()> {
    let (e, upstream) = (e.clone(), f.clone() as Arc<dyn UpstreamClient>);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (e, upstream) = (e.clone(), upstream.clone());
        async move {
            let req = req.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed());
            let target = Target {
                address: std::net::SocketAddr::new(VIP.parse().unwrap(), PORT),
            };
            Ok::<_, Infallible>(e.handle(upstream, caller("web"), target, req).await)
        }
    });
    tokio::spawn(async move {
        let io = TokioIo::new(io);
        // The connection ends in an error whenever the client misbehaves: that is the test.
        let _ = if http2 {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        } else {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
        };
    })
}

/// Sends `raw` bytes as an HTTP/1.1 client, closes its sending side and reads the answer.
async fn raw_http1(e: &Arc<Engine>, f: &Arc<Fake>, raw: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let served = serve(e, f, server, false);
    client.write_all(raw).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    served.await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

const MALFORMED_CHUNKED: &[u8] = b"POST / HTTP/1.1\r\nhost: reviews:9080\r\n\
    transfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";

#[tokio::test(start_paused = true)]
async fn a_malformed_chunked_body_is_answered_400_dpe_and_ejects_nobody() {
    let (e, f) = (guarded(retried), fake());
    for _ in 0..ROUNDS {
        let answer = raw_http1(&e, &f, MALFORMED_CHUNKED).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.ends_with("Bad Request"), "{answer}");
    }
    // One attempt each: never retried.
    assert_eq!(f.attempts(), ROUNDS);
    let text = e.runtime.render_metrics();
    let dpe = [("response_code", "400"), ("response_flags", "DPE")];
    assert_eq!(count_of(&text, &dpe), ROUNDS as u64, "{text}");
    assert!(both_in_rotation(&e, &f).await, "{:?}", f.count_by_uid());
}

#[tokio::test(start_paused = true)]
async fn a_client_closing_mid_body_is_flagged_dc_and_ejects_nobody() {
    let (e, f) = (guarded(retried), fake());
    for _ in 0..ROUNDS {
        // Ten bytes of a hundred, then the client closes its side.
        let answer = raw_http1(
            &e,
            &f,
            b"POST / HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: 100\r\n\r\n0123456789",
        )
        .await;
        // A client that only half-closed still reads the answer; telemetry says 0 all the
        // same, as for one that is gone.
        assert!(
            answer.starts_with("HTTP/1.1 499 Client Closed Request"),
            "{answer}"
        );
    }
    assert_eq!(f.attempts(), ROUNDS);
    let text = e.runtime.render_metrics();
    let dc = [("response_code", "0"), ("response_flags", "DC")];
    assert_eq!(count_of(&text, &dc), ROUNDS as u64, "{text}");
    assert!(both_in_rotation(&e, &f).await, "{:?}", f.count_by_uid());
}

/// How an HTTP/2 client ends a POST it declared 100 bytes long, after its first 10.
#[derive(Clone, Copy)]
enum H2End {
    /// It resets the stream.
    Reset,
    /// It ends the stream one byte later, 89 bytes short.
    Short,
}

/// An HTTP/2 client on a new connection to the engine: a POST that ends as `end` says once
/// the upstream is reading its body.
async fn h2_post(e: &Arc<Engine>, f: &Arc<Fake>, end: H2End) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let served = serve(e, f, server, true);
    let (mut h2, connection) = h2::client::handshake(client).await.unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::post("http://reviews:9080/")
        .header("content-length", "100")
        .body(())
        .unwrap();
    let attempts = f.attempts();
    let (response, mut stream) = h2.send_request(request, false).unwrap();
    stream
        .send_data(Bytes::from_static(b"0123456789"), false)
        .unwrap();
    while f.attempts() == attempts {
        tokio::task::yield_now().await;
    }
    match end {
        H2End::Reset => stream.send_reset(h2::Reason::CANCEL),
        H2End::Short => stream.send_data(Bytes::from_static(b"!"), true).unwrap(),
    }
    // Whatever the stream ends with, the connection then closes.
    let _ = response.await;
    drop((h2, stream));
    let _ = connection.await;
    served.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn http2_resets_are_dc_and_content_length_mismatches_dpe_and_neither_counts() {
    let (e, f) = (guarded(retried), fake());
    for _ in 0..ROUNDS {
        h2_post(&e, &f, H2End::Reset).await;
        h2_post(&e, &f, H2End::Short).await;
    }
    assert_eq!(f.attempts(), 2 * ROUNDS, "never retried");
    let text = e.runtime.render_metrics();
    let dc = [("response_code", "0"), ("response_flags", "DC")];
    assert_eq!(count_of(&text, &dc), ROUNDS as u64, "{text}");
    let dpe = [("response_code", "400"), ("response_flags", "DPE")];
    assert_eq!(count_of(&text, &dpe), ROUNDS as u64, "{text}");
    assert!(both_in_rotation(&e, &f).await, "{:?}", f.count_by_uid());
}

/// A POST whose client sends three bytes and then nothing.
fn stalled_post() -> Request<crate::engine::Body> {
    let mut r = request("POST", "/", &[], "");
    *r.body_mut() = scripted(vec![Ok(Bytes::from_static(b"abc"))], true);
    r
}

#[tokio::test(start_paused = true)]
async fn a_body_too_slow_for_the_timeouts_is_answered_408_and_ejects_nobody() {
    // The route's timeout, then the per-try timeout (which would otherwise be retried).
    let route_timeout = |f: &mut pb::Forward| {
        retried(f);
        f.timeout = secs(2);
    };
    let attempt_timeout = |f: &mut pb::Forward| {
        retried(f);
        f.attempt_timeout = secs(1);
    };
    let engines = [guarded(route_timeout), guarded(attempt_timeout)];
    for (i, e) in engines.iter().enumerate() {
        let f = fake();
        for _ in 0..ROUNDS {
            let a = send(e, &f, caller("web"), stalled_post()).await;
            assert_eq!(a.status, 408, "engine {i}");
            assert_eq!(a.body, "request timeout");
        }
        assert_eq!(f.attempts(), ROUNDS);
        let text = e.runtime.render_metrics();
        assert_eq!(count_of(&text, &[("response_code", "408")]), ROUNDS as u64);
        assert_eq!(count_of(&text, &[("response_flags", "UT")]), 0, "{text}");
        assert!(both_in_rotation(e, &f).await, "{:?}", f.count_by_uid());
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_leaving_before_its_answer_is_recorded_dc_and_ejects_nobody() {
    let (e, f) = (guarded(retried), fake());
    f.set(V1A_ADDR, Behavior::Hang);
    f.set(V1B_ADDR, Behavior::Hang);
    for _ in 0..ROUNDS {
        let before = f.calls().len();
        let (e2, f2) = (e.clone(), f.clone());
        let waiting = tokio::spawn(async move { get(&e2, &f2, "/", &[]).await });
        while f.calls().len() == before {
            tokio::task::yield_now().await;
        }
        // The transport drops the request when its client goes away.
        waiting.abort();
        assert!(waiting.await.is_err_and(|e| e.is_cancelled()));
    }
    let text = e.runtime.render_metrics();
    let dc = [("response_code", "0"), ("response_flags", "DC")];
    assert_eq!(count_of(&text, &dc), ROUNDS as u64, "{text}");
    f.set(V1A_ADDR, Behavior::Status(200));
    f.set(V1B_ADDR, Behavior::Status(200));
    assert!(both_in_rotation(&e, &f).await, "{:?}", f.count_by_uid());
}

#[tokio::test(start_paused = true)]
async fn upstream_resets_5xx_and_timeouts_still_eject() {
    let cases = [
        (Behavior::Reset, 503, "UR"),
        (Behavior::Status(500), 500, ""),
        (Behavior::Hang, 504, "UT"),
    ];
    for (behavior, status, flag) in cases {
        // No retries: the endpoint's failure is the answer.
        let e = guarded(|f| f.attempt_timeout = secs(1));
        let f = fake();
        f.set(V1A_ADDR, behavior);
        // Round robin: one of the two reaches v1-a.
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let a = send(&e, &f, caller("web"), request("POST", "/", &[], "x")).await;
            statuses.push(a.status.as_u16());
        }
        statuses.sort();
        let mut expected = [200, status];
        expected.sort();
        assert_eq!(statuses, expected);
        if !flag.is_empty() {
            let text = e.runtime.render_metrics();
            assert_eq!(count_of(&text, &[("response_flags", flag)]), 1, "{text}");
        }
        let before = f.count_by_uid().get(V1A).copied().unwrap_or_default();
        for _ in 0..10 {
            assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
        }
        let after = f.count_by_uid().get(V1A).copied().unwrap_or_default();
        assert_eq!(after, before, "v1-a is ejected after answering {status}");
    }
}
