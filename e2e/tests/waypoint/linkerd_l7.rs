//! Linkerd's per-route authorization at the waypoint (`examples/linkerd-policy/waypoint` on
//! top of the shop): a Server on the orders pods with one HTTPRoute whose AuthorizationPolicy
//! admits the client's service account. Through the waypoint the client gets 200 on the
//! route, the api-gateway (another service account) 403, and a request no route matches 404,
//! as Linkerd's proxy answers it; a narrower route takes precedence under its prefix. Then
//! the Server's HTTPLocalRateLimitPolicy: 429 over a client's limit, none under it.

use e2e::{SETTLE, Sandbox, eventually};
use meshctl::app::load_report::LoadReport;

use super::shop::{self, API_GATEWAY, CLIENT, ORDERS, load, waypoint_log};

/// Requests per probe.
const REQUESTS: u64 = 20;

fn url(path: &str) -> String {
    format!("{ORDERS}{path}")
}

/// `REQUESTS` requests from `pod` to `path` (with `extra` load arguments).
fn probe(sb: &Sandbox, pod: &str, path: &str, extra: &[&str]) -> LoadReport {
    let mut args = vec!["-c", "4"];
    args.extend_from_slice(extra);
    load(sb, pod, &url(path), REQUESTS, &args)
}

/// Asserts every request of `report` got `status`.
fn all(sb: &Sandbox, report: &LoadReport, status: u16, what: &str) {
    assert_eq!(
        report.count(status),
        REQUESTS,
        "{what}: statuses {:?}, errors {:?}\n--- waypoint log\n{}",
        report.statuses,
        report.errors,
        waypoint_log(sb)
    );
}

/// Applies the example and waits until the waypoint refuses the api-gateway on the route.
fn apply_route_policy(sb: &Sandbox) {
    sb.apply(&e2e::examples::yaml("linkerd-policy/waypoint"))
        .unwrap_or_else(|e| panic!("applying examples/linkerd-policy/waypoint: {e}"));
    let mut last = None;
    let refused = eventually(SETTLE, || {
        let r = probe(sb, API_GATEWAY, "/orders/1", &[]);
        let done = r.count(403) == REQUESTS;
        last = Some(r);
        done
    });
    let last = last.expect("one probe ran");
    assert!(
        refused,
        "the api-gateway is never refused on the route: statuses {:?}, errors {:?}\n--- waypoint log\n{}",
        last.statuses,
        last.errors,
        waypoint_log(sb)
    );
}

#[test]
fn a_linkerd_route_policy_admits_its_service_account_and_refuses_others_at_the_waypoint() {
    let sb = shop::up();
    apply_route_policy(&sb);
    all(
        &sb,
        &probe(&sb, CLIENT, "/orders/1", &[]),
        200,
        "the client on the route",
    );
    all(
        &sb,
        &probe(&sb, API_GATEWAY, "/orders", &[]),
        403,
        "the api-gateway on the route",
    );
    all(
        &sb,
        &probe(&sb, CLIENT, "/inventory", &[]),
        404,
        "a path no route matches",
    );
    all(
        &sb,
        &probe(&sb, CLIENT, "/orders/1", &["-X", "POST"]),
        404,
        "a method no route matches",
    );
    all(
        &sb,
        &probe(&sb, CLIENT, "/ordersx", &[]),
        404,
        "a prefix matches whole segments only",
    );

    // A narrower route admitting the api-gateway: under it the route takes precedence (the
    // longest prefix, as Linkerd picks it), so the api-gateway is admitted there (some of its
    // requests over the example's rate limit of 2 per second per pod get 429, none 403) and
    // the client, which only the broader route admits, is not.
    sb.apply(ADMIN_ROUTE)
        .unwrap_or_else(|e| panic!("applying the admin route: {e}"));
    let mut last = None;
    let admitted = eventually(SETTLE, || {
        let r = probe(&sb, API_GATEWAY, "/orders/admin/1", &[]);
        let done = r.count(200) > 0 && r.count(200) + r.count(429) == REQUESTS;
        last = Some(r);
        done
    });
    let last = last.expect("one probe ran");
    assert!(
        admitted,
        "the api-gateway is never admitted on the narrower route: statuses {:?}, errors {:?}\n--- waypoint log\n{}",
        last.statuses,
        last.errors,
        waypoint_log(&sb)
    );
    all(
        &sb,
        &probe(&sb, CLIENT, "/orders/admin/1", &[]),
        403,
        "the client under the narrower route",
    );
    all(
        &sb,
        &probe(&sb, CLIENT, "/orders/1", &[]),
        200,
        "the client elsewhere on the broader route",
    );
}

/// A route under /orders/admin admitting the api-gateway.
const ADMIN_ROUTE: &str = r#"apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: orders-admin, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: orders}]
  rules: [{matches: [{path: {type: PathPrefix, value: /orders/admin}}]}]
---
apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-admin-api-gateway, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: orders-admin}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: api-gateway}
"#;

/// Requests of a rate-limit burst: far more than 2 per second per pod.
const BURST: u64 = 60;

/// An AuthorizationPolicy of the Server admitting the api-gateway on every route.
const GATEWAY_ON_SERVER: &str = r#"apiVersion: policy.linkerd.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: orders-api-gateway, namespace: shop}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: orders}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: api-gateway}
"#;

#[test]
fn a_linkerd_rate_limit_answers_429_over_the_identity_limit_and_not_under_the_override() {
    let sb = shop::up();
    apply_route_policy(&sb);
    sb.apply(GATEWAY_ON_SERVER)
        .unwrap_or_else(|e| panic!("applying the api-gateway's policy: {e}"));
    // A burst well above 2 per second per pod, sent within a second: some admitted, the rest
    // answered 429 (nothing else).
    let burst = |pod: &str| load(&sb, pod, &url("/orders/1"), BURST, &["-c", "8"]);
    let mut last = None;
    let limited = eventually(SETTLE, || {
        let r = burst(API_GATEWAY);
        let done = r.count(429) > 0 && r.count(200) > 0 && r.count(200) + r.count(429) == BURST;
        last = Some(r);
        done
    });
    let last = last.expect("one burst ran");
    assert!(
        limited,
        "the api-gateway's burst is never limited: statuses {:?}, errors {:?}\n--- waypoint log\n{}",
        last.statuses,
        last.errors,
        waypoint_log(&sb)
    );
    // The client's override (1000 per second) admits the whole burst.
    let client = burst(CLIENT);
    assert_eq!(
        client.count(200),
        BURST,
        "the client under its override: statuses {:?}, errors {:?}\n--- waypoint log\n{}",
        client.statuses,
        client.errors,
        waypoint_log(&sb)
    );
}
