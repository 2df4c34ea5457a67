//! Per-route metrics through the whole engine: each request counted once under the route
//! that took it, those no route took under the service's default route, across config
//! versions.

use api::waypoint as pb;
use prometheus_registry::scrape;

use super::cfg::*;
use super::fake::Behavior;
use crate::engine::{Engine, Runtime};

const STATUSES: &str = "outbound_http_route_request_statuses_total";

/// A route of `reviews` taking paths under `prefix`, made by the object `kind`/`object` as
/// its rule `rule`, forwarding to `subset`.
fn named_route(prefix: &str, kind: &str, object: &str, rule: &str, subset: &str) -> pb::Route {
    let mut r = route(
        &format!("shop/{object}/{rule}"),
        vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: Some(pb::path_match::Kind::SegmentPrefix(prefix.into())),
                ignore_case: false,
            }),
            ..Default::default()
        }],
        forward(&[(subset, 1)]),
    );
    r.rule_name = rule.into();
    r.source = Some(pb::ConfigSource {
        kind: kind.into(),
        namespace: "shop".into(),
        name: object.into(),
    });
    r
}

fn two_routes() -> pb::Waypoint {
    waypoint(
        vec![reviews(vec![
            named_route("/a", "VirtualService", "reviews", "a", "v1"),
            named_route("/b", "HTTPRoute", "reviews-b", "b", "v2"),
        ])],
        vec![reviews_policy(None)],
        vec![],
    )
}

fn count(text: &str, filter: &[(&str, &str)]) -> u64 {
    scrape::sum(&scrape::parse(text), STATUSES, filter) as u64
}

#[tokio::test]
async fn each_request_is_counted_once_under_its_route() {
    let runtime = Runtime::new();
    let e = std::sync::Arc::new(Engine::compile(&two_routes(), runtime.clone()).unwrap());
    let f = fake();
    f.set(V2_ADDR, Behavior::Status(503));
    for _ in 0..7 {
        assert_eq!(get(&e, &f, "/a/1", &[]).await.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&e, &f, "/b/1", &[]).await.status, 503);
    }
    for _ in 0..2 {
        assert_eq!(get(&e, &f, "/c", &[]).await.status, 404);
    }
    let text = runtime.render_metrics();
    let parent = [("parent_kind", "Service"), ("parent_name", "reviews")];
    assert_eq!(count(&text, &parent), 12);
    let a = [
        ("route_group", "networking.istio.io"),
        ("route_kind", "VirtualService"),
        ("route_namespace", "shop"),
        ("route_name", "a"),
    ];
    assert_eq!(count(&text, &a), 7);
    assert_eq!(
        count(&text, &[("route_name", "a"), ("http_status", "200")]),
        7
    );
    let b = [("route_kind", "HTTPRoute"), ("route_name", "b")];
    assert_eq!(count(&text, &b), 3);
    assert_eq!(
        count(&text, &[("route_name", "b"), ("http_status", "503")]),
        3
    );
    // No route matched: the default route, answered 404.
    let default = [
        ("route_group", ""),
        ("route_kind", "default"),
        ("route_namespace", ""),
        ("route_name", "http"),
        ("http_status", "404"),
    ];
    assert_eq!(count(&text, &default), 2);
    let durations = scrape::parse(&text);
    let a_count = scrape::sum(
        &durations,
        "outbound_http_route_request_duration_seconds_count",
        &a,
    );
    assert_eq!(a_count, 7.0);
    // Istio's metrics have no route label and count every request.
    assert!(!text.contains("istio_requests_total{route"));
    assert_eq!(
        crate::engine::telemetry::count_of(&text, &[("destination_service_name", "reviews")]),
        12
    );

    // A new config version keeps each route's counters.
    let mut next = two_routes();
    next.services[0].routes.truncate(1);
    let e = std::sync::Arc::new(Engine::compile(&next, runtime.clone()).unwrap());
    assert_eq!(get(&e, &f, "/a/2", &[]).await.status, 200);
    assert_eq!(get(&e, &f, "/b/2", &[]).await.status, 404);
    let text = runtime.render_metrics();
    assert_eq!(count(&text, &a), 8);
    assert_eq!(count(&text, &b), 3);
    assert_eq!(count(&text, &[("route_kind", "default")]), 3);
}

#[tokio::test]
async fn requests_refused_before_routing_count_under_the_default_route() {
    let mut w = two_routes();
    w.services[0].rate_limit = Some(pb::LocalRateLimit {
        max_tokens: 1,
        tokens_per_fill: 1,
        fill_interval: secs(3600),
        source: None,
    });
    let e = engine(&w);
    let f = fake();
    assert_eq!(get(&e, &f, "/a/1", &[]).await.status, 200);
    assert_eq!(get(&e, &f, "/a/1", &[]).await.status, 429);
    let text = e.runtime.render_metrics();
    assert_eq!(count(&text, &[("route_name", "a")]), 1);
    let limited = [("route_kind", "default"), ("http_status", "429")];
    assert_eq!(count(&text, &limited), 1);
}
