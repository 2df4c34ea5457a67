//! Routing: weighted splits, header overrides, mirrors, rewrites, redirects, direct answers,
//! missing routes and services.

use api::waypoint::{self as pb, route};

use super::cfg::*;
use super::fake::Behavior;
use crate::engine::telemetry::count_of;

fn canary() -> pb::Waypoint {
    waypoint(
        vec![reviews(vec![
            route(
                "beta",
                vec![header_is("x-beta-user", "true")],
                forward(&[("v2", 1)]),
            ),
            route("split", vec![], forward(&[("v1", 90), ("v2", 10)])),
        ])],
        vec![reviews_policy(None)],
        vec![],
    )
}

#[tokio::test]
async fn canary_split_with_header_override() {
    let e = engine(&canary());
    let f = fake();
    let n = 2000;
    for _ in 0..n {
        assert_eq!(get(&e, &f, "/reviews/1", &[]).await.status, 200);
    }
    let by_uid = f.count_by_uid();
    let v2 = by_uid.get(V2).copied().unwrap_or(0);
    let v1 = by_uid.get(V1A).copied().unwrap_or(0) + by_uid.get(V1B).copied().unwrap_or(0);
    assert_eq!(v1 + v2, n);
    // 10 % of 2000: mean 200, standard deviation ~13.4; six of them either side.
    assert!((120..=280).contains(&v2), "v2 got {v2}");
    // Both v1 pods share v1's traffic.
    assert!(by_uid[V1A] > 0 && by_uid[V1B] > 0);

    for _ in 0..200 {
        let a = get(&e, &f, "/reviews/1", &[("x-beta-user", "true")]).await;
        assert_eq!(a.body, format!("from {V2}"));
    }
    let text = e.runtime.render_metrics();
    assert_eq!(
        count_of(&text, &[("response_code", "200")]),
        (n + 200) as u64
    );
}

#[tokio::test]
async fn mirror_copies_never_change_the_answer() {
    let e = mirrored_to_v2();
    let fk = fake();
    // The mirror target fails: the client must not notice.
    fk.set(V2_ADDR, Behavior::Status(500));
    let n = 50;
    for i in 0..n {
        let a = send(
            &e,
            &fk,
            caller("web"),
            request("POST", &format!("/r/{i}"), &[], "payload"),
        )
        .await;
        assert_eq!(a.status, 200);
        assert!(a.body.starts_with(b"from Kubernetes//Pod/shop/reviews-v1"));
    }
    // Copies arrive on their own tasks: wait until all have been received.
    loop {
        let copies = fk.calls().into_iter().filter(|c| c.uid == V2).count();
        if copies == n {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for c in fk.calls().into_iter().filter(|c| c.uid == V2) {
        assert_eq!(c.host, format!("reviews-shadow:{PORT}"));
        assert_eq!(c.body, "payload");
        assert_eq!(c.method, "POST");
    }
    let text = e.runtime.render_metrics();
    // Only the client's requests are counted.
    assert_eq!(count_of(&text, &[]), n as u64);
}

#[tokio::test]
async fn mirror_percentage_is_honoured() {
    let mut f = forward(&[("v1", 1)]);
    f.mirrors = vec![pb::Mirror {
        destination: Some(dest(RATINGS, "")),
        percentage: 0.0,
    }];
    let e = engine(&waypoint(
        vec![reviews(vec![route("none-mirrored", vec![], f)])],
        vec![reviews_policy(None)],
        vec![],
    ));
    let fk = fake();
    for _ in 0..100 {
        get(&e, &fk, "/", &[]).await;
    }
    tokio::task::yield_now().await;
    assert!(fk.calls().iter().all(|c| c.uid != RATINGS_UID));
}

#[tokio::test]
async fn rewrites_headers_and_request_identity() {
    let mut f = forward(&[("v1", 1)]);
    f.rewrite = Some(pb::UrlRewrite {
        path: Some(pb::url_rewrite::Path::Prefix("/v2/".into())),
        host: "reviews-internal".into(),
    });
    f.destinations[0].response_headers = Some(pb::HeaderModifier {
        set: vec![pb::Header {
            name: "x-served-by".into(),
            value: "v1".into(),
        }],
        ..Default::default()
    });
    let mut r = route(
        "api",
        vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::SegmentPrefix("/api".into())),
                ignore_case: false,
            }),
            ..Default::default()
        }],
        f,
    );
    r.request_headers = Some(pb::HeaderModifier {
        add: vec![pb::Header {
            name: "x-route".into(),
            value: "api".into(),
        }],
        remove: vec!["x-internal".into()],
        ..Default::default()
    });
    let e = engine(&waypoint(
        vec![reviews(vec![r])],
        vec![reviews_policy(None)],
        vec![],
    ));
    let fk = fake();
    let a = get(&e, &fk, "/api/items?page=2", &[("x-internal", "1")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["x-served-by"], "v1");
    let call = fk.calls().pop().unwrap();
    assert_eq!(call.path, "/v2/items?page=2");
    assert_eq!(call.host, "reviews-internal");
    assert_eq!(call.headers["x-route"], "api");
    assert!(!call.headers.contains_key("x-internal"));
    assert_eq!(call.headers["x-request-id"].len(), 36);
    // No tracing for the service: no trace context is made up.
    assert!(!call.headers.contains_key("traceparent"));
}

#[tokio::test]
async fn redirects_direct_answers_and_misses() {
    let redirect = pb::Route {
        name: "moved".into(),
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::Exact("/old".into())),
                ignore_case: false,
            }),
            ..Default::default()
        }],
        action: Some(route::Action::Redirect(pb::Redirect {
            path: Some(pb::redirect::Path::FullPath("/new".into())),
            status: 301,
            ..Default::default()
        })),
        ..Default::default()
    };
    let direct = pb::Route {
        name: "teapot".into(),
        matches: vec![header_is("x-tea", "yes")],
        action: Some(route::Action::DirectResponse(pb::DirectResponse {
            status: 418,
            body: b"short and stout".to_vec(),
        })),
        ..Default::default()
    };
    let only_get = route(
        "get-only",
        vec![pb::RouteMatch {
            method: Some(exact("GET")),
            ..Default::default()
        }],
        forward(&[("", 1)]),
    );
    let e = engine(&waypoint(
        vec![reviews(vec![redirect, direct, only_get])],
        vec![reviews_policy(None)],
        vec![],
    ));
    let fk = fake();
    let a = get(&e, &fk, "/old?x=1", &[]).await;
    assert_eq!(a.status, 301);
    assert_eq!(
        a.headers["location"],
        format!("http://reviews:{PORT}/new?x=1")
    );
    let a = get(&e, &fk, "/", &[("x-tea", "yes")]).await;
    assert_eq!(
        (a.status.as_u16(), &a.body[..]),
        (418, &b"short and stout"[..])
    );
    let a = send(&e, &fk, caller("web"), request("DELETE", "/x", &[], "")).await;
    assert_eq!(a.status, 404);
    assert!(fk.calls().is_empty());
    let text = e.runtime.render_metrics();
    assert_eq!(
        count_of(&text, &[("response_code", "404"), ("response_flags", "NR")]),
        1
    );

    // A service this waypoint does not serve is not forwarded.
    let upstream: std::sync::Arc<dyn crate::engine::UpstreamClient> = fk.clone();
    let target = crate::engine::Target {
        address: std::net::SocketAddr::new(RATINGS_VIP.parse().unwrap(), PORT),
    };
    let resp = e
        .handle(
            upstream,
            caller("web"),
            target,
            request("GET", "/", &[], ""),
        )
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn protocols_and_unknown_subsets() {
    let mut svc = reviews(vec![route("to-v9", vec![], forward(&[("v9", 1)]))]);
    svc.ports.push(pb::Port {
        name: "tcp-db".into(),
        port: 5432,
        target_port: 5432,
        protocol: pb::Protocol::Tcp as i32,
    });
    let e = engine(&waypoint(vec![svc], vec![reviews_policy(None)], vec![]));
    let target = |port| crate::engine::Target {
        address: std::net::SocketAddr::new(VIP.parse().unwrap(), port),
    };
    assert_eq!(e.port_protocol(&target(5432)), pb::Protocol::Tcp);
    assert_eq!(e.port_protocol(&target(PORT)), pb::Protocol::Http);
    assert_eq!(e.port_protocol(&target(1)), pb::Protocol::Unspecified);
    let a = get(&e, &fake(), "/", &[]).await;
    assert_eq!(a.status, 503);
    let text = e.runtime.render_metrics();
    assert_eq!(count_of(&text, &[("response_flags", "NC")]), 1);
}

#[tokio::test]
async fn invalid_configs_are_refused_whole() {
    let mut bad = route("bad-regex", vec![], forward(&[("v1", 1)]));
    bad.matches = vec![pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: Some(pb::path_match::Kind::Regex("(unclosed".into())),
            ignore_case: false,
        }),
        ..Default::default()
    }];
    let w = waypoint(vec![reviews(vec![bad])], vec![], vec![]);
    let err = crate::engine::Engine::compile(&w, crate::engine::Runtime::new())
        .err()
        .expect("refused");
    assert!(err.0.contains("bad-regex"), "{err}");
    let zero = waypoint(
        vec![reviews(vec![route("zero", vec![], forward(&[("v1", 0)]))])],
        vec![],
        vec![],
    );
    assert!(crate::engine::Engine::compile(&zero, crate::engine::Runtime::new()).is_err());
}
