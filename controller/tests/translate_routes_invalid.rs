//! Invalid traffic objects are reported with file, kind/name and field, and
//! skipped; the last good version of an object stays in force.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use common::*;
use controller::model::Index;
use controller::translate::{TranslateOptions, Translator};
use routes::*;

#[test]
fn each_invalid_object_names_its_field() {
    let t = run(&["routes-mesh.yaml", "routes-invalid.yaml"]);
    let table = [
        (
            "HTTPRoute",
            "bad-regex",
            "spec.rules[0].matches[0].path.value",
            "not a valid regular expression",
        ),
        (
            "HTTPRoute",
            "zero-weights",
            "spec.rules[0].backendRefs",
            "weights add up to 0",
        ),
        (
            "HTTPRoute",
            "unknown-filter",
            "spec.rules[0].filters[0].type",
            "\"ExtensionRef\" is not supported",
        ),
        (
            "HTTPRoute",
            "bad-duration",
            "spec.rules[0].timeouts.request",
            "is not a duration",
        ),
        (
            "HTTPRoute",
            "missing-backend",
            "spec.rules[0].backendRefs[0].name",
            "no Service shop/reviews-v9",
        ),
        (
            "HTTPRoute",
            "bad-type",
            "spec.rules[0].backendRefs[0].port",
            "invalid type",
        ),
        (
            "VirtualService",
            "bad-retry-on",
            "spec.http[0].retries.retryOn",
            "unknown retry condition \"sometimes\"",
        ),
        (
            "VirtualService",
            "missing-destination",
            "spec.http[0].route[0].destination.host",
            "names no Service",
        ),
        (
            "TrafficSplit",
            "bad-quantity",
            "spec.backends[0].weight",
            "not a weight",
        ),
        (
            "ServiceProfile",
            "details.shop.svc.cluster.local",
            "spec.routes[0].condition.pathRegex",
            "not a valid regular expression",
        ),
        (
            "DestinationRule",
            "bad-lb",
            "spec.trafficPolicy.loadBalancer.simple",
            "PASSTHROUGH",
        ),
        (
            "EnvoyFilter",
            "bad-bucket",
            "spec.configPatches[0].patch.value.typed_config.token_bucket.max_tokens",
            "not a positive count",
        ),
    ];
    for (kind, name, field, text) in table {
        let p = problems_about(&t, kind, name);
        assert_eq!(p.len(), 1, "{kind} {name}: {p:?}");
        assert_eq!(p[0].field, field, "{kind} {name}");
        assert!(p[0].message.contains(text), "{kind} {name}: {}", p[0]);
        assert!(p[0].message.ends_with("; object skipped"), "{}", p[0]);
        assert_eq!(p[0].origin, "fixtures/routes-invalid.yaml");
        assert_eq!(p[0].namespace, "shop");
    }
    let rendered = problems_about(&t, "HTTPRoute", "bad-regex")[0].to_string();
    assert!(
        rendered.starts_with(
            "fixtures/routes-invalid.yaml: HTTPRoute shop/bad-regex: field spec.rules[0].matches[0].path.value:"
        ),
        "{rendered}"
    );
    assert_eq!(errors(&t).len(), table.len(), "{:?}", t.problems);
    // Nothing of the skipped objects reaches the waypoint.
    let w = shop(&t);
    assert!(!w.services.is_empty());
    for s in &w.services {
        assert_eq!(route_names(s), ["default"], "{}", s.name);
        assert!(s.rate_limit.is_none());
    }
}

const GOOD: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/v[0-9]+"}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
"#;

fn index_with(route: &str) -> Index {
    let (origin, mesh) = fixture("routes-mesh.yaml");
    let parsed = controller::model::parse_documents(&origin, &mesh, false);
    let r = controller::model::parse_documents("r.yaml", route, false);
    Index::from_origins(vec![
        (origin, parsed.objects, parsed.problems),
        ("r.yaml".into(), r.objects, r.problems),
    ])
}

#[test]
fn last_good_route_stays_in_force() {
    let bad = GOOD.replace("/v[0-9]+", "/v[0-9+");
    let mut translator = Translator::new(TranslateOptions::default());
    let first = translator.translate(&index_with(GOOD));
    assert!(errors(&first).is_empty(), "{:?}", first.problems);
    let good_routes = route_names(&served(&shop(&first), "reviews")).join(",");
    assert_eq!(good_routes, "shop/r/rule-0/match-0");

    let second = translator.translate(&index_with(&bad));
    assert_eq!(shop(&second), shop(&first), "last good version served");
    let p = problems_about(&second, "HTTPRoute", "r");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].message.ends_with("; keeping its last good version"),
        "{}",
        p[0]
    );

    // Removed from the index: gone, and forgotten.
    let third = translator.translate(&index_with(""));
    assert_eq!(route_names(&served(&shop(&third), "reviews")), ["default"]);
    let fourth = translator.translate(&index_with(&bad));
    assert_eq!(route_names(&served(&shop(&fourth), "reviews")), ["default"]);
    assert!(
        problems_about(&fourth, "HTTPRoute", "r")[0]
            .message
            .ends_with("; object skipped")
    );
}

#[test]
fn last_good_rate_limit_annotation_stays_in_force() {
    let svc = |limit: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: limited\n  namespace: shop\n  annotations: {{mesh.io/rate-limit: \"{limit}\"}}\nspec:\n  clusterIP: 10.96.0.40\n  ports: [{{name: http, port: 80}}]\n"
        )
    };
    let mut translator = Translator::new(TranslateOptions::default());
    let first = translator.translate(&index_with(&svc("10/s")));
    let limit = served(&shop(&first), "limited").rate_limit.unwrap();
    assert_eq!(limit.tokens_per_fill, 10);
    let second = translator.translate(&index_with(&svc("ten per second")));
    assert_eq!(served(&shop(&second), "limited").rate_limit, Some(limit));
    let p = problems_about(&second, "Service", "limited");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].field, "metadata.annotations[mesh.io/rate-limit]");
}

#[test]
fn an_out_of_range_target_port_is_left_out_by_ztunnels_and_waypoints_alike() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: odd, namespace: shop}\nspec:\n  clusterIP: 10.96.0.41\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n  - {name: http-big, port: 81, targetPort: 70000}\n";
    let t = controller::translate::translate(&index_with(svc), &TranslateOptions::default());
    let p = problems_about(&t, "Service", "odd");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "spec.ports[1].targetPort");
    let for_ztunnel = service(&t, "shop", "odd").expect("service");
    let ztunnel_ports: Vec<(u32, u32)> = for_ztunnel
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(ztunnel_ports, [(80, 8080)]);
    let waypoint_ports: Vec<(u32, u32)> = served(&shop(&t), "odd")
        .ports
        .iter()
        .map(|p| (p.port, p.target_port))
        .collect();
    assert_eq!(waypoint_ports, [(80, 8080)]);
}
