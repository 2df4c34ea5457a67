//! Gateway API TCPRoute (on a Service or on the waypoint Gateway) → the weighted TCP backends
//! of service ports, on `fixtures/routes-mesh.yaml`.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use api::waypoint::{Protocol, Service, TcpRoute};
use common::*;
use controller::model::{Index, parse_documents};
use controller::translate::{TranslateOptions, Translation, translate};
use routes::*;

/// The mesh fixture plus `yaml` (TCPRoutes and HTTPRoutes in namespace shop).
fn with(yaml: &str) -> Translation {
    let (origin, text) = fixture("routes-mesh.yaml");
    let mesh = parse_documents(&origin, &text, false);
    let extra = parse_documents("routes.yaml", yaml, false);
    let index = Index::from_origins(vec![
        (origin, mesh.objects, mesh.problems),
        ("routes.yaml".into(), extra.objects, extra.problems),
    ]);
    translate(&index, &TranslateOptions::default())
}

/// A TCPRoute `name` created at second `age` with `parent` (YAML flow map) and `backends`
/// ((name, port, weight)).
fn tcp_route(name: &str, age: u32, parent: &str, backends: &[(&str, u16, u32)]) -> String {
    let refs: Vec<String> = backends
        .iter()
        .map(|(n, p, w)| format!("{{name: {n}, port: {p}, weight: {w}}}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  \
         name: {name}\n  namespace: shop\n  creationTimestamp: \"2025-01-01T00:00:{age:02}Z\"\n\
         spec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{}]}}]\n---\n",
        refs.join(", ")
    )
}

const REVIEWS_7000: &str = "{group: \"\", kind: Service, name: reviews, port: 7000}";

/// (hostname, port, weight) of a backend.
type Backend = (String, u32, u32);

/// (port, backends, unresolved weight) of each TCP route.
fn tcp(s: &Service) -> Vec<(u32, Vec<Backend>, u32)> {
    s.tcp_routes
        .iter()
        .map(|r: &TcpRoute| {
            let backends = r
                .destinations
                .iter()
                .map(|w| {
                    let d = w.destination.as_ref().expect("destination");
                    (d.hostname.clone(), d.port, w.weight)
                })
                .collect();
            (r.port, backends, r.unresolved_weight)
        })
        .collect()
}

fn protocols(s: &Service) -> Vec<(u32, Protocol)> {
    s.ports
        .iter()
        .map(|p| (p.port, Protocol::try_from(p.protocol).unwrap()))
        .collect()
}

/// (field, message) of the problems about a TCPRoute.
fn about(t: &Translation, name: &str) -> Vec<(String, String)> {
    problems_about(t, "TCPRoute", name)
        .into_iter()
        .map(|p| (p.field.clone(), p.message.clone()))
        .collect()
}

#[test]
fn weighted_backends_of_one_port_leave_zero_weights_out() {
    let backends = [("reviews-v1", 9080, 100), ("reviews-v2", 9080, 0)];
    let t = with(&tcp_route("split", 1, REVIEWS_7000, &backends));
    let reviews = served(&shop(&t), "reviews");
    assert_eq!(
        tcp(&reviews),
        [(7000, vec![(host("reviews-v1"), 9080, 100)], 0)]
    );
    let route = &reviews.tcp_routes[0];
    let source = route.source.as_ref().unwrap();
    assert_eq!(
        (
            source.kind.as_str(),
            source.name.as_str(),
            route.rule_name.as_str()
        ),
        ("TCPRoute", "split", "rule-0")
    );
    assert!(about(&t, "split").is_empty(), "{:?}", about(&t, "split"));
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
}

#[test]
fn a_missing_backend_keeps_its_share_and_is_reported() {
    let backends = [("reviews-v1", 9080, 50), ("nope", 9000, 50)];
    let t = with(&tcp_route("half", 1, REVIEWS_7000, &backends));
    let reviews = served(&shop(&t), "reviews");
    assert_eq!(
        tcp(&reviews),
        [(7000, vec![(host("reviews-v1"), 9080, 50)], 50)]
    );
    assert_eq!(
        about(&t, "half"),
        [(
            "spec.rules[0].backendRefs[1].name".to_string(),
            "warning: no Service shop/nope; the connections given to this backend are refused"
                .to_string()
        )]
    );
    // A port the backend does not have does not resolve either.
    let t = with(&tcp_route("port", 1, REVIEWS_7000, &[("reviews-v1", 7, 1)]));
    assert_eq!(tcp(&served(&shop(&t), "reviews")), [(7000, vec![], 1)]);
    assert_eq!(about(&t, "port")[0].0, "spec.rules[0].backendRefs[0].port");
}

#[test]
fn a_route_without_port_makes_every_port_tcp_but_those_http_routes_take() {
    let http = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: \
                {name: web, namespace: shop}\nspec:\n  parentRefs: [{group: \"\", kind: \
                Service, name: reviews, port: 9080}]\n---\n";
    let all = "{group: \"\", kind: Service, name: reviews}";
    let yaml = format!(
        "{http}{}",
        tcp_route("all", 1, all, &[("reviews-v1", 9080, 1)])
    );
    let reviews = served(&shop(&with(&yaml)), "reviews");
    assert_eq!(
        protocols(&reviews),
        [
            (9080, Protocol::Http),
            (9090, Protocol::Tcp),
            (7000, Protocol::Tcp)
        ]
    );
    let ports: Vec<u32> = tcp(&reviews).iter().map(|r| r.0).collect();
    assert_eq!(ports, [9090, 7000]);
    let t = with(&yaml);
    let warned = about(&t, "all");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0]
            .1
            .contains("port 9080 of Service shop/reviews is also routed by HTTPRoute shop/web"),
        "{warned:?}"
    );
    // Without the HTTPRoute, the HTTP port turns TCP, with a warning.
    let t = with(&tcp_route("all", 1, all, &[("reviews-v1", 9080, 1)]));
    assert_eq!(
        protocols(&served(&shop(&t), "reviews"))[0],
        (9080, Protocol::Tcp)
    );
    assert!(
        about(&t, "all")[0].1.contains("is declared HTTP"),
        "{t:?}",
        t = t.problems
    );
}

#[test]
fn the_oldest_route_of_a_port_wins() {
    let yaml = format!(
        "{}{}",
        tcp_route("newer", 5, REVIEWS_7000, &[("reviews-v2", 9080, 1)]),
        tcp_route("older", 1, REVIEWS_7000, &[("reviews-v1", 9080, 1)])
    );
    let t = with(&yaml);
    let routes = tcp(&served(&shop(&t), "reviews"));
    assert_eq!(routes, [(7000, vec![(host("reviews-v1"), 9080, 1)], 0)]);
    let warned = about(&t, "newer");
    assert!(
        warned[0]
            .1
            .contains("routed by the older TCPRoute shop/older"),
        "{warned:?}"
    );
    assert!(about(&t, "older").is_empty());
}

#[test]
fn a_waypoint_parent_routes_the_port_of_every_service_it_serves() {
    let parent = "{name: waypoint, sectionName: mesh, port: 7000}";
    let t = with(&tcp_route("wp", 1, parent, &[("reviews-v2", 9080, 1)]));
    let w = shop(&t);
    assert_eq!(
        tcp(&served(&w, "reviews")),
        [(7000, vec![(host("reviews-v2"), 9080, 1)], 0)]
    );
    // Services without port 7000 get nothing.
    assert!(served(&w, "ratings").tcp_routes.is_empty());
    assert!(about(&t, "wp").is_empty(), "{:?}", about(&t, "wp"));
    // A listener the waypoint does not have: the route is refused.
    let bad = "{name: waypoint, sectionName: tcp}";
    let t = with(&tcp_route("wp", 1, bad, &[("reviews-v2", 9080, 1)]));
    assert!(served(&shop(&t), "reviews").tcp_routes.is_empty());
    assert_eq!(
        about(&t, "wp"),
        [(
            "spec.parentRefs[0].sectionName".to_string(),
            "waypoint shop/waypoint has no listener \"tcp\"; object skipped".to_string()
        )]
    );
}

#[test]
fn invalid_routes_are_refused_naming_the_field() {
    let cases = [
        (
            tcp_route(
                "r",
                1,
                "{group: \"\", kind: Service, name: nope}",
                &[("reviews-v1", 9080, 1)],
            ),
            "spec.parentRefs[0].name",
            "no Service shop/nope",
        ),
        (
            tcp_route(
                "r",
                1,
                "{group: \"\", kind: Service, name: reviews, port: 1}",
                &[("reviews-v1", 9080, 1)],
            ),
            "spec.parentRefs[0].port",
            "Service shop/reviews has no port 1",
        ),
        (
            tcp_route("r", 1, REVIEWS_7000, &[]),
            "spec.rules[0].backendRefs",
            "a TCPRoute rule needs at least one backend",
        ),
        (
            tcp_route("r", 1, REVIEWS_7000, &[("reviews-v1", 9080, 1)]).replace("port: 9080, ", ""),
            "spec.rules[0].backendRefs[0].port",
            "a Service backend needs its port",
        ),
    ];
    for (yaml, field, message) in cases {
        let t = with(&yaml);
        assert_eq!(
            about(&t, "r"),
            [(field.to_string(), format!("{message}; object skipped"))],
            "{yaml}"
        );
        assert!(served(&shop(&t), "reviews").tcp_routes.is_empty());
    }
}

#[test]
fn fields_the_mesh_does_not_read_are_reported() {
    let yaml = tcp_route("r", 1, REVIEWS_7000, &[("reviews-v1", 9080, 1)])
        .replace("rules: [{", "rules: [{matches: [{port: 1}], ");
    let t = with(&yaml);
    let warned = about(&t, "r");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].0, "spec.rules[0].matches");
    assert_eq!(tcp(&served(&shop(&t), "reviews")).len(), 1);
}
