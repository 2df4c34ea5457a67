//! Gateway API HTTPRoute and GRPCRoute (GAMMA) → waypoint routes, from
//! `fixtures/routes-httproute.yaml` on `fixtures/routes-mesh.yaml`.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use api::waypoint::{
    HeaderMatch, HeaderModifier, Protocol, QueryParamMatch, RetryPolicy, path_match, redirect,
    route, url_rewrite,
};
use common::*;
use routes::*;

fn t() -> controller::translate::Translation {
    run(&["routes-mesh.yaml", "routes-httproute.yaml"])
}

#[test]
fn waypoint_serves_the_bound_services_with_ports_and_addresses() {
    let t = t();
    let w = shop(&t);
    assert_eq!(
        (w.namespace.as_str(), w.name.as_str()),
        ("shop", "waypoint")
    );
    // Sorted by name; the waypoint's own Service and `direct` are not served.
    assert_eq!(
        names(&w),
        ["details", "ratings", "reviews", "reviews-v1", "reviews-v2"]
    );
    let reviews = served(&w, "reviews");
    assert_eq!(reviews.hostname, host("reviews"));
    assert_eq!(reviews.addresses, ["10.96.0.10", "fd00::a"]);
    let ports: Vec<(u32, u32, i32)> = reviews
        .ports
        .iter()
        .map(|p| (p.port, p.target_port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            (9080, 8080, Protocol::Http as i32),
            (9090, 0, Protocol::Unspecified as i32),
            (7000, 7000, Protocol::Tcp as i32),
        ]
    );
    assert_eq!(
        served(&w, "ratings").ports[0].protocol,
        Protocol::Grpc as i32
    );
    assert_eq!(
        served(&w, "details").ports[0].protocol,
        Protocol::Http2 as i32
    );
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
    let warned = problems_about(&t, "HTTPRoute", "reviews-extra");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].field, "spec.parentRefs[1].group");
}

#[test]
fn precedence_across_routes() {
    let t = t();
    let reviews = served(&shop(&t), "reviews");
    assert_eq!(
        route_names(&reviews),
        [
            // Exact path first.
            "shop/reviews/rule-1/match-0:9080",
            // Then by prefix length: /api/v1/long, /api/ (trimmed to /api,
            // with method), /api with a method, /api with two headers.
            "shop/reviews-extra/rule-0/match-0",
            "shop/reviews/canary/match-0:9080",
            "shop/reviews-extra/rule-0/match-1",
            "shop/reviews-extra/rule-0/match-2",
            // The catch-all prefix /.
            "shop/reviews-extra/rule-1/match-0",
            // Regular expressions after every prefix.
            "shop/reviews/rule-2/match-0:9080",
        ]
    );
}

#[test]
fn every_match_type() {
    let t = t();
    let reviews = served(&shop(&t), "reviews");
    let canary = route(&reviews, "shop/reviews/canary/match-0:9080");
    assert_eq!(canary.source.as_ref().unwrap().kind, "HTTPRoute");
    let m = &canary.matches[0];
    assert_eq!(
        m.path.as_ref().unwrap().kind,
        Some(path_match::Kind::SegmentPrefix("/api".into()))
    );
    assert_eq!(m.method, Some(exact("GET")));
    assert_eq!(
        m.headers,
        [
            HeaderMatch {
                name: "x-canary".into(),
                value: Some(exact("yes")),
                invert: false
            },
            HeaderMatch {
                name: "x-user".into(),
                value: Some(regex("user-[0-9]+")),
                invert: false
            },
        ]
    );
    assert_eq!(
        m.query_params,
        [QueryParamMatch {
            name: "debug".into(),
            value: Some(exact("1"))
        }]
    );
    // The parentRef's port limits the route.
    assert_eq!(m.port, 9080);
    let exact_route = route(&reviews, "shop/reviews/rule-1/match-0:9080");
    assert_eq!(
        exact_route.matches[0].path.as_ref().unwrap().kind,
        Some(path_match::Kind::Exact("/old".into()))
    );
    let re = route(&reviews, "shop/reviews/rule-2/match-0:9080");
    assert_eq!(
        re.matches[0].path.as_ref().unwrap().kind,
        Some(path_match::Kind::Regex("/reviews/[0-9]+".into()))
    );
}

#[test]
fn filters_backends_timeouts_and_retries() {
    let t = t();
    let reviews = served(&shop(&t), "reviews");
    let canary = route(&reviews, "shop/reviews/canary/match-0:9080");
    let rh = canary.request_headers.as_ref().unwrap();
    assert_eq!(
        (rh.set[0].name.as_str(), rh.set[0].value.as_str()),
        ("x-route", "canary")
    );
    assert_eq!(rh.add[0].name, "x-trace");
    assert_eq!(rh.remove, ["x-internal"]);
    assert_eq!(
        canary.response_headers.as_ref().unwrap().set[0].name,
        "cache-control"
    );
    let f = forward(canary);
    // The zero-weight backend gets nothing and is left out.
    assert_eq!(
        destinations(f),
        [
            (host("reviews-v1"), 9080, String::new(), 90),
            (host("reviews-v2"), 9080, String::new(), 10),
        ]
    );
    assert_eq!(
        f.destinations[1].request_headers,
        Some(HeaderModifier {
            set: vec![api::waypoint::Header {
                name: "x-version".into(),
                value: "v2".into()
            }],
            ..Default::default()
        })
    );
    let mirrors: Vec<(String, f64)> = f
        .mirrors
        .iter()
        .map(|m| {
            (
                m.destination.as_ref().unwrap().hostname.clone(),
                m.percentage,
            )
        })
        .collect();
    assert_eq!(
        mirrors,
        [(host("reviews-v2"), 25.0), (host("details"), 12.5)]
    );
    let rewrite = f.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.host, "reviews.internal");
    assert_eq!(rewrite.path, Some(url_rewrite::Path::Prefix("/v2/".into())));
    assert_eq!(f.timeout, dur(10, 0));
    assert_eq!(f.attempt_timeout, dur(2, 0));
    assert_eq!(
        f.retry,
        Some(RetryPolicy {
            attempts: 3,
            retry_on: vec![
                "connect-failure".into(),
                "refused-stream".into(),
                "retriable-status-codes".into()
            ],
            retriable_status_codes: vec![502, 503],
            backoff: dur(0, 100_000_000),
            retry_non_idempotent: true,
        })
    );
}

#[test]
fn redirects_parent_backends_and_default_retries() {
    let t = t();
    let reviews = served(&shop(&t), "reviews");
    let old = route(&reviews, "shop/reviews/rule-1/match-0:9080");
    match &old.action {
        Some(route::Action::Redirect(r)) => {
            assert_eq!(
                (r.scheme.as_str(), r.host.as_str(), r.port),
                ("https", "reviews.example.com", 8443)
            );
            assert_eq!(r.path, Some(redirect::Path::FullPath("/new".into())));
            assert_eq!(r.status, 301);
        }
        other => panic!("{other:?}"),
    }
    // No backendRefs: the parent service; `attempts: 0` turns retries off.
    let re = forward(route(&reviews, "shop/reviews/rule-2/match-0:9080"));
    assert_eq!(destinations(re), [(host("reviews"), 0, String::new(), 1)]);
    assert_eq!(re.retry, None);
    // No retry stanza: the default policy, idempotent requests only.
    let extra = forward(route(&reviews, "shop/reviews-extra/rule-1/match-0"));
    let retry = extra.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 2);
    assert!(!retry.retry_non_idempotent);
    assert_eq!(retry.retriable_status_codes, [503]);
}

#[test]
fn grpc_methods_become_paths() {
    let t = t();
    let ratings = served(&shop(&t), "ratings");
    let paths: Vec<Option<path_match::Kind>> = ratings
        .routes
        .iter()
        .map(|r| r.matches[0].path.as_ref().unwrap().kind.clone())
        .collect();
    assert_eq!(
        paths,
        [
            Some(path_match::Kind::Exact("/ratings.v1.Ratings/Get".into())),
            Some(path_match::Kind::SegmentPrefix(
                "/ratings.v1.Ratings".into()
            )),
            Some(path_match::Kind::Regex("/[^/]+/Health".into())),
            Some(path_match::Kind::Regex(
                "/(?:ratings\\.v[0-9]+\\.Ratings)/(?:List.*)".into()
            )),
        ]
    );
    let first = &ratings.routes[0];
    assert_eq!(first.source.as_ref().unwrap().kind, "GRPCRoute");
    assert_eq!(first.matches[0].headers[0].name, "x-tenant");
    assert_eq!(first.request_headers.as_ref().unwrap().add[0].name, "x-via");
    let f = forward(first);
    assert_eq!(destinations(f), [(host("ratings"), 9090, String::new(), 1)]);
    assert_eq!(f.retry.as_ref().unwrap().attempts, 1);
}

#[test]
fn services_without_routes_get_a_default_route() {
    let t = t();
    let w = shop(&t);
    let v1 = served(&w, "reviews-v1");
    assert_eq!(route_names(&v1), ["default"]);
    let d = &v1.routes[0];
    assert!(d.matches.is_empty());
    let source = d.source.as_ref().unwrap();
    assert_eq!(
        (source.kind.as_str(), source.name.as_str()),
        ("Service", "reviews-v1")
    );
    assert_eq!(
        destinations(forward(d)),
        [(host("reviews-v1"), 0, String::new(), 1)]
    );
    // Every served and routed-to service has an upstream policy.
    for h in ["reviews", "reviews-v1", "reviews-v2", "details", "ratings"] {
        policy(&w, &host(h));
    }
}

#[test]
fn config_dump_shows_waypoint_configuration() {
    let t = t();
    let dump = controller::admin::config_dump(&t.snapshot);
    let w = &dump[api::WAYPOINT_TYPE_URL]["shop/waypoint"];
    assert!(w["version"].is_string());
    let reviews = &w["resource"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == host("reviews"))
        .unwrap()
        .clone();
    assert_eq!(reviews["ports"][0]["protocol"], "PROTOCOL_HTTP");
    let canary = reviews["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "shop/reviews/canary/match-0:9080")
        .unwrap()
        .clone();
    assert_eq!(canary["source"], "HTTPRoute shop/reviews");
    assert_eq!(canary["forward"]["timeout"], "10s");
    assert_eq!(canary["forward"]["retry"]["backoff"], "0.1s");
    assert_eq!(canary["matches"][0]["path"]["segmentPrefix"], "/api");
}
