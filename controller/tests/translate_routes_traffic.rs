//! SMI TrafficSplit, Linkerd ServiceProfile, the precedence between route
//! sources, and local rate limits (EnvoyFilter and annotation), from
//! `fixtures/routes-smi-linkerd.yaml` and `fixtures/routes-ratelimit.yaml`.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use api::waypoint::{LocalRateLimit, RetryBudget, path_match};
use common::*;
use routes::*;

#[test]
fn split_weights_are_normalised() {
    let t = run(&["routes-mesh.yaml", "routes-smi-linkerd.yaml"]);
    let reviews = served(&shop(&t), "reviews");
    let default = route(&reviews, "default");
    let source = default.source.as_ref().unwrap();
    assert_eq!(
        (source.kind.as_str(), source.name.as_str()),
        ("TrafficSplit", "reviews-rollout")
    );
    assert_eq!(
        destinations(forward(default)),
        [
            (host("reviews-v1"), 0, String::new(), 9),
            (host("reviews-v2"), 0, String::new(), 1)
        ]
    );
    let shadowed = problems_about(&t, "TrafficSplit", "reviews-newer");
    assert_eq!(shadowed.len(), 1);
    assert!(
        shadowed[0]
            .message
            .contains("TrafficSplit shop/reviews-rollout"),
        "{}",
        shadowed[0]
    );
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
}

#[test]
fn profile_routes_precede_the_default_route() {
    let t = run(&["routes-mesh.yaml", "routes-smi-linkerd.yaml"]);
    let w = shop(&t);
    let reviews = served(&w, "reviews");
    assert_eq!(
        route_names(&reviews),
        [
            "shop/reviews.shop.svc.cluster.local/GET /books/{id}",
            "shop/reviews.shop.svc.cluster.local/write books",
            "default",
        ]
    );
    let get = route(
        &reviews,
        "shop/reviews.shop.svc.cluster.local/GET /books/{id}",
    );
    assert_eq!(get.source.as_ref().unwrap().kind, "ServiceProfile");
    assert_eq!(get.matches.len(), 1);
    assert_eq!(get.matches[0].method, Some(exact("GET")));
    assert_eq!(
        get.matches[0].path.as_ref().unwrap().kind,
        Some(path_match::Kind::Regex("/books/[^/]+".into()))
    );
    let f = forward(get);
    // The profile's routes forward where the default route does (the split).
    assert_eq!(destinations(f).len(), 2);
    assert_eq!(f.timeout, dur(0, 300_000_000));
    let retry = f.retry.as_ref().unwrap();
    assert_eq!(retry.retry_on, ["5xx"]);
    assert!(
        retry.retry_non_idempotent,
        "the profile says the route is retryable"
    );
    // (POST or PUT) and /books and not /books/internal: two alternatives.
    let write = route(&reviews, "shop/reviews.shop.svc.cluster.local/write books");
    let methods: Vec<_> = write
        .matches
        .iter()
        .map(|m| m.method.clone().unwrap())
        .collect();
    assert_eq!(methods, [exact("POST"), exact("PUT")]);
    assert!(write.matches.iter().all(|m| m.not_paths.len() == 1));
    let wf = forward(write);
    assert_eq!(wf.timeout, dur(1, 0));
    assert!(
        !wf.retry.as_ref().unwrap().retry_non_idempotent,
        "not retryable: defaults"
    );
    // The budget belongs to the service's upstream policy.
    let p = policy(&w, &host("reviews"));
    assert_eq!(
        p.retry_budget,
        Some(RetryBudget {
            retry_ratio: 0.3,
            min_retries_per_second: 5,
            ttl: dur(20, 0)
        })
    );
    assert_eq!(p.sources[0].kind, "ServiceProfile");
    // A retryable route without a budget gets Linkerd's default one.
    let ratings = policy(&w, &host("ratings"));
    assert_eq!(
        ratings.retry_budget,
        Some(RetryBudget {
            retry_ratio: 0.2,
            min_retries_per_second: 10,
            ttl: dur(10, 0)
        })
    );
}

#[test]
fn profile_destination_overrides() {
    let t = run(&["routes-mesh.yaml", "routes-smi-linkerd.yaml"]);
    let details = served(&shop(&t), "details");
    assert_eq!(route_names(&details), ["default"]);
    let d = &details.routes[0];
    assert_eq!(d.source.as_ref().unwrap().kind, "ServiceProfile");
    assert_eq!(
        destinations(forward(d)),
        [
            (host("reviews-v1"), 9080, String::new(), 1),
            (host("reviews-v2"), 9080, String::new(), 3)
        ]
    );
    assert!(policy(&shop(&t), &host("details")).retry_budget.is_none());
}

#[test]
fn route_sources_by_precedence() {
    let kinds = |t: &controller::translate::Translation| -> Vec<String> {
        served(&shop(t), "reviews")
            .routes
            .iter()
            .map(|r| r.source.as_ref().unwrap().kind.clone())
            .collect()
    };
    // TrafficSplit (with the profile's routes) < VirtualService < HTTPRoute.
    let t = run(&["routes-mesh.yaml", "routes-smi-linkerd.yaml"]);
    assert_eq!(
        kinds(&t),
        ["ServiceProfile", "ServiceProfile", "TrafficSplit"]
    );
    let t = run(&[
        "routes-mesh.yaml",
        "routes-smi-linkerd.yaml",
        "routes-istio.yaml",
    ]);
    assert!(
        !kinds(&t).is_empty() && kinds(&t).iter().all(|k| k == "VirtualService"),
        "{:?}",
        kinds(&t)
    );
    for (kind, name) in [
        ("TrafficSplit", "reviews-rollout"),
        ("ServiceProfile", "reviews.shop.svc.cluster.local"),
    ] {
        let p = problems_about(&t, kind, name);
        assert_eq!(p.len(), 1, "{kind} {name}: {p:?}");
        assert!(
            p[0].message.contains("VirtualService shop/reviews"),
            "{}",
            p[0]
        );
    }
    // The profile's budget still applies to the service.
    assert!(policy(&shop(&t), &host("reviews")).retry_budget.is_some());
    let t = run(&[
        "routes-mesh.yaml",
        "routes-smi-linkerd.yaml",
        "routes-istio.yaml",
        "routes-httproute.yaml",
    ]);
    assert!(
        !kinds(&t).is_empty() && kinds(&t).iter().all(|k| k == "HTTPRoute"),
        "{:?}",
        kinds(&t)
    );
    let p = problems_about(&t, "VirtualService", "reviews");
    assert!(
        p.iter()
            .any(|p| p.message.contains("HTTPRoute shop/reviews")),
        "{p:?}"
    );
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
}

#[test]
fn rate_limits() {
    let t = run(&["routes-mesh.yaml", "routes-ratelimit.yaml"]);
    let w = shop(&t);
    let limit = |name: &str| served(&w, name).rate_limit;
    let filter = LocalRateLimit {
        max_tokens: 50,
        tokens_per_fill: 10,
        fill_interval: dur(1, 0),
        source: Some(api::waypoint::ConfigSource {
            kind: "EnvoyFilter".into(),
            namespace: "shop".into(),
            name: "reviews-ratelimit".into(),
        }),
    };
    // Every service whose pods the workload selector picks.
    assert_eq!(limit("reviews"), Some(filter.clone()));
    assert_eq!(limit("reviews-v1"), Some(filter.clone()));
    assert_eq!(limit("reviews-v2"), Some(filter));
    // By reference, per-route form, camelCase, tokens_per_fill defaulting to 1.
    let details = limit("details").unwrap();
    assert_eq!((details.max_tokens, details.tokens_per_fill), (5, 1));
    assert_eq!(details.fill_interval, dur(60, 0));
    // Never enforced: no limit, and a warning.
    assert_eq!(limit("ratings"), None);
    let p = problems_about(&t, "EnvoyFilter", "ratings-disabled");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("never enforce"), "{}", p[0]);
    // The annotation.
    let search = limit("search").unwrap();
    assert_eq!((search.max_tokens, search.tokens_per_fill), (200, 100));
    assert_eq!(search.fill_interval, dur(1, 0));
    assert_eq!(search.source.unwrap().kind, "Service");
    // Patches other than rate limits are reported as ignored.
    let p = problems_about(&t, "EnvoyFilter", "reviews-ratelimit");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("1 patch(es) ignored"), "{}", p[0]);
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
}

#[test]
fn annotation_wins_over_envoy_filters() {
    let (origin, mesh) = fixture("routes-mesh.yaml");
    let (_, limits) = fixture("routes-ratelimit.yaml");
    let annotated = mesh.replace(
        "  name: reviews-v2\n  namespace: shop\n",
        "  name: reviews-v2\n  namespace: shop\n  annotations: {mesh.io/rate-limit: \"3/m\"}\n",
    );
    assert_ne!(annotated, mesh);
    let t = controller::translate::translate(
        &index_from(&origin, &format!("{annotated}\n---\n{limits}")),
        &Default::default(),
    );
    let w = shop(&t);
    let v2 = served(&w, "reviews-v2").rate_limit.unwrap();
    assert_eq!((v2.tokens_per_fill, v2.fill_interval), (3, dur(60, 0)));
    assert_eq!(
        served(&w, "reviews-v1").rate_limit.unwrap().tokens_per_fill,
        10
    );
}
