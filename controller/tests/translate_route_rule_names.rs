//! Every route carries the name its source object gives it (`rule_name`), which the
//! waypoint's per-route metrics and `meshctl routes` report: VirtualService http route
//! names, HTTPRoute rule names (generated when unnamed), ServiceProfile route names, and
//! nothing for the default route the controller adds itself.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use common::*;
use routes::*;

/// `(route name, rule name, source kind)` of every route of `service`, in order.
fn rule_names(
    t: &controller::translate::Translation,
    service: &str,
) -> Vec<(String, String, String)> {
    served(&shop(t), service)
        .routes
        .iter()
        .map(|r| {
            let kind = r.source.as_ref().map_or("", |s| s.kind.as_str());
            (r.name.clone(), r.rule_name.clone(), kind.to_string())
        })
        .collect()
}

fn triple(name: &str, rule: &str, kind: &str) -> (String, String, String) {
    (name.to_string(), rule.to_string(), kind.to_string())
}

#[test]
fn virtual_service_routes_carry_their_http_route_names() {
    let t = run(&["routes-mesh.yaml", "routes-istio.yaml"]);
    let kind = "VirtualService";
    assert_eq!(
        rule_names(&t, "reviews"),
        [
            triple("shop/reviews/jason", "jason", kind),
            triple("shop/reviews/moved", "moved", kind),
            triple("shop/reviews/teapot", "teapot", kind),
            triple("shop/reviews/grpc-fault", "grpc-fault", kind),
            triple("shop/reviews/split", "split", kind),
        ]
    );
    // A service no VirtualService routes gets the controller's own default route.
    assert_eq!(
        rule_names(&t, "details"),
        [triple("default", "", "Service")]
    );
}

#[test]
fn http_route_rules_carry_their_names_or_generated_ones() {
    let t = run(&["routes-mesh.yaml", "routes-httproute.yaml"]);
    let kind = "HTTPRoute";
    assert_eq!(
        rule_names(&t, "reviews"),
        [
            triple("shop/reviews/rule-1/match-0:9080", "rule-1", kind),
            triple("shop/reviews-extra/rule-0/match-0", "rule-0", kind),
            triple("shop/reviews/canary/match-0:9080", "canary", kind),
            triple("shop/reviews-extra/rule-0/match-1", "rule-0", kind),
            triple("shop/reviews-extra/rule-0/match-2", "rule-0", kind),
            triple("shop/reviews-extra/rule-1/match-0", "rule-1", kind),
            triple("shop/reviews/rule-2/match-0:9080", "rule-2", kind),
        ]
    );
}

#[test]
fn service_profile_routes_carry_their_names_before_the_default_route() {
    let t = run(&["routes-mesh.yaml", "routes-smi-linkerd.yaml"]);
    let profile = "shop/reviews.shop.svc.cluster.local";
    let rules = rule_names(&t, "reviews");
    let named: Vec<(&str, &str)> = rules
        .iter()
        .map(|(name, rule, _)| (name.as_str(), rule.as_str()))
        .collect();
    assert_eq!(
        named,
        [
            (
                format!("{profile}/GET /books/{{id}}").as_str(),
                "GET /books/{id}"
            ),
            (format!("{profile}/write books").as_str(), "write books"),
            ("default", ""),
        ]
    );
    assert_eq!(rules[0].2, "ServiceProfile");
}
