//! Istio VirtualService and DestinationRule → waypoint routes and upstream
//! policies, from `fixtures/routes-istio.yaml` on `fixtures/routes-mesh.yaml`.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use std::collections::BTreeMap;

use api::waypoint::{
    ConnectionPool, DirectResponse, FaultAbort, FaultDelay, HeaderMatch, LoadBalancer,
    OutlierDetection, QueryParamMatch, RetryPolicy, TrafficPolicy, path_match, redirect, route,
    url_rewrite,
};
use common::*;
use routes::*;

fn t() -> controller::translate::Translation {
    run(&["routes-mesh.yaml", "routes-istio.yaml"])
}

#[test]
fn hosts_in_every_form_and_route_order() {
    let t = t();
    let w = shop(&t);
    let names = [
        "shop/reviews/jason",
        "shop/reviews/moved",
        "shop/reviews/teapot",
        "shop/reviews/grpc-fault",
        "shop/reviews/split",
    ];
    // The gateway-only route is left out; unmatched requests get 404.
    assert_eq!(route_names(&served(&w, "reviews")), names);
    assert_eq!(route_names(&served(&w, "ratings")), names);
    // `details` is only named by a gateway VirtualService.
    assert_eq!(route_names(&served(&w, "details")), ["default"]);
    let warned: Vec<&str> = problems_about(&t, "VirtualService", "reviews")
        .iter()
        .map(|p| p.field.as_str())
        .collect();
    // The unknown host, and the abort without a percentage (which, as in
    // Istio, aborts nothing).
    assert_eq!(
        warned,
        ["spec.hosts[2]", "spec.http[4].fault.abort.percentage"]
    );
    let shadowed = problems_about(&t, "VirtualService", "reviews-newer");
    assert_eq!(shadowed.len(), 1);
    assert!(
        shadowed[0].message.contains("VirtualService shop/reviews"),
        "{}",
        shadowed[0]
    );
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
}

#[test]
fn every_match_field() {
    let t = t();
    let reviews = served(&shop(&t), "reviews");
    let m = &route(&reviews, "shop/reviews/jason").matches[0];
    let path = m.path.as_ref().unwrap();
    assert_eq!(path.kind, Some(path_match::Kind::Prefix("/api".into())));
    assert!(path.ignore_case);
    assert_eq!(m.method, Some(exact("GET")));
    let h = |name: &str, value: Option<api::waypoint::StringMatch>, invert: bool| HeaderMatch {
        name: name.into(),
        value,
        invert,
    };
    assert_eq!(
        m.headers,
        [
            h(":authority", Some(exact("reviews.shop")), false),
            h("end-user", Some(exact("jason")), false),
            h("x-debug", None, false),
            h("x-skip", Some(prefix("1")), true),
        ]
    );
    assert_eq!(
        m.query_params,
        [QueryParamMatch {
            name: "v".into(),
            value: Some(regex("[0-9]+"))
        }]
    );
    assert_eq!(m.port, 9080);
    assert_eq!(m.source_namespace, "frontend");
}

#[test]
fn every_action_field() {
    let t = t();
    let w = shop(&t);
    let reviews = served(&w, "reviews");
    let jason = route(&reviews, "shop/reviews/jason");
    let f = forward(jason);
    assert_eq!(destinations(f), [(host("reviews"), 9080, "v2".into(), 100)]);
    // The subset's labels come from the DestinationRule.
    let d = f.destinations[0].destination.as_ref().unwrap();
    assert_eq!(
        d.subset_labels,
        BTreeMap::from([("version".into(), "v2".into())])
    );
    assert_eq!(
        f.destinations[0].request_headers.as_ref().unwrap().set[0].name,
        "x-subset"
    );
    let rewrite = f.rewrite.as_ref().unwrap();
    assert_eq!(
        rewrite.path,
        Some(url_rewrite::Path::Prefix("/v2/api".into()))
    );
    assert_eq!(rewrite.host, "reviews-v2");
    assert_eq!(f.timeout, dur(5, 0));
    assert_eq!(f.attempt_timeout, dur(1, 500_000_000));
    assert_eq!(
        f.retry,
        Some(RetryPolicy {
            attempts: 4,
            retry_on: vec!["gateway-error".into(), "retriable-status-codes".into()],
            retriable_status_codes: vec![503],
            backoff: None,
            retry_non_idempotent: true,
        })
    );
    assert_eq!(f.mirrors.len(), 1);
    assert_eq!(
        f.mirrors[0].destination.as_ref().unwrap().hostname,
        host("details")
    );
    assert_eq!(f.mirrors[0].percentage, 20.0);
    let fault = jason.fault.as_ref().unwrap();
    assert_eq!(
        fault.delay,
        Some(FaultDelay {
            fixed_delay: dur(2, 0),
            percentage: 10.0
        })
    );
    assert_eq!(
        fault.abort,
        Some(FaultAbort {
            http_status: 503,
            grpc_status: 0,
            percentage: 0.5
        })
    );
    let rh = jason.request_headers.as_ref().unwrap();
    assert_eq!(
        (rh.add[0].name.as_str(), rh.remove[0].as_str()),
        ("x-via", "x-secret")
    );
    assert_eq!(
        jason.response_headers.as_ref().unwrap().set[0].name,
        "x-served-by"
    );

    match &route(&reviews, "shop/reviews/moved").action {
        Some(route::Action::Redirect(r)) => {
            assert_eq!(r.path, Some(redirect::Path::FullPath("/new".into())));
            assert_eq!((r.host.as_str(), r.status), ("reviews.example.com", 308));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        route(&reviews, "shop/reviews/teapot").action,
        Some(route::Action::DirectResponse(DirectResponse {
            status: 418,
            body: b"I'm a teapot".to_vec()
        }))
    );
    let grpc = route(&reviews, "shop/reviews/grpc-fault");
    let abort = grpc.fault.as_ref().unwrap().abort.as_ref().unwrap();
    assert_eq!((abort.grpc_status, abort.percentage), (14, 0.0));
    assert_eq!(forward(grpc).retry, None, "attempts: 0 turns retries off");
    let warned = problems_about(&t, "VirtualService", "reviews");
    assert!(!warned.is_empty());
    assert!(warned.iter().all(|p| p.message.starts_with("warning:")));

    let split = forward(route(&reviews, "shop/reviews/split"));
    assert_eq!(
        destinations(split),
        [
            (host("reviews"), 0, "v1".into(), 75),
            (host("reviews"), 0, "v2".into(), 25),
        ]
    );
    let mirrors: Vec<f64> = split.mirrors.iter().map(|m| m.percentage).collect();
    assert_eq!(mirrors, [5.0, 100.0]);
    // No retries stanza: the default policy.
    assert_eq!(split.retry.as_ref().unwrap().attempts, 2);
}

#[test]
fn destination_rule_policies_and_subsets() {
    let t = t();
    let w = shop(&t);
    let p = policy(&w, &host("reviews"));
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.sources[0].kind, "DestinationRule");
    let base = TrafficPolicy {
        load_balancer: LoadBalancer::RoundRobin as i32,
        connection_pool: Some(ConnectionPool {
            max_connections: 100,
            max_pending_requests: 10,
            max_requests: 1000,
            max_requests_per_connection: 5,
            max_retries: 3,
            connect_timeout: dur(3, 0),
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx_errors: 7,
            consecutive_gateway_errors: 3,
            interval: dur(5, 0),
            base_ejection_time: dur(60, 0),
            max_ejection_percent: 50,
        }),
    };
    assert_eq!(p.traffic_policy, Some(base));
    assert_eq!(p.subsets.len(), 2);
    let v1 = &p.subsets[0];
    assert_eq!(v1.name, "v1");
    assert_eq!(v1.workload_uids, ["Kubernetes//Pod/shop/reviews-v1-1"]);
    assert_eq!(v1.traffic_policy, Some(base), "inherits the rule's policy");
    let v2 = &p.subsets[1];
    assert_eq!(v2.workload_uids, ["Kubernetes//Pod/shop/reviews-v2-1"]);
    // Overridden groups replace the rule's; the outlier detection group is
    // replaced whole, with defaults for what it leaves out.
    let v2p = v2.traffic_policy.as_ref().unwrap();
    assert_eq!(v2p.load_balancer, LoadBalancer::Random as i32);
    assert_eq!(v2p.connection_pool, base.connection_pool);
    assert_eq!(
        v2p.outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: 0,
            interval: dur(1, 0),
            base_ejection_time: dur(30, 0),
            max_ejection_percent: 10,
        })
    );
    // Unsupported consistent hashing falls back to the default, with a warning.
    let details = policy(&w, &host("details"));
    assert_eq!(
        details.traffic_policy.as_ref().unwrap().load_balancer,
        LoadBalancer::LeastRequest as i32
    );
    let warned = problems_about(&t, "DestinationRule", "details");
    assert_eq!(
        warned[0].field,
        "spec.trafficPolicy.loadBalancer.consistentHash"
    );
    // Services without a rule get the defaults.
    let plain = policy(&w, &host("reviews-v1"));
    assert_eq!(plain.traffic_policy, Some(TrafficPolicy::default()));
    assert!(plain.subsets.is_empty() && plain.sources.is_empty());
}

#[test]
fn unknown_subsets_are_reported() {
    let t = run(&["routes-mesh.yaml", "routes-istio.yaml"]);
    // v3 has weight 0: left out, so not reported.
    assert!(!t.problems.iter().any(|p| p.message.contains("\"v3\"")));
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v9, namespace: shop}
spec:
  hosts: [details]
  http: [{route: [{destination: {host: reviews, subset: v9}}]}]
"#;
    let (origin, mesh) = fixture("routes-mesh.yaml");
    let text = format!("{mesh}\n---\n{yaml}");
    let t = controller::translate::translate(&index_from(&origin, &text), &Default::default());
    let p = problems_about(&t, "VirtualService", "v9");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("subset \"v9\""), "{}", p[0]);
    assert_eq!(p[0].origin, origin);
}
