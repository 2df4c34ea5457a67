//! Linkerd's policy of pods a waypoint serves: the waypoint enforces the Server's rules and
//! its routes (DENY policies scoped to the pods, with the client's identity; a request no route
//! matches answered 404), and ztunnel admits the waypoint's identity on the Server's port.

#[path = "translate_common.rs"]
mod common;

use api::security::string_match::MatchType;
use api::waypoint::{
    AuthorizationAction, AuthorizationPolicy, ConditionKey, PolicyScope, Waypoint,
    string_match::Kind,
};
use common::*;
use controller::translate::{TranslateOptions, Translation, Translator};

/// The shop: pod `web` (port 8080 `http`, service account web) behind the waypoint through the
/// Service `web` (port 80 → `http`), the Server `web` on 8080, and `extra`.
fn cluster(extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {{istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: shop}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: shop, labels: {{app: web}}}}
spec:
  serviceAccountName: web
  containers:
  - name: web
    ports: [{{name: http, containerPort: 8080}}]
status: {{phase: Running, podIP: 10.0.0.5}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop, labels: {{istio.io/use-waypoint: waypoint}}}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: Server
metadata: {{name: web, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  port: http
---
{extra}"#
    )
}

/// The HTTPRoute `get` of the Server: GET under /orders.
const ROUTE: &str = r#"apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: get, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /orders}, method: GET}]
---
"#;

/// An AuthorizationPolicy on `target` (`kind/name`) admitting the service account `sa`.
fn policy(name: &str, target: &str, sa: &str) -> String {
    let (kind, target) = target.split_once('/').expect("kind/name");
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  targetRef: {{group: policy.linkerd.io, kind: {kind}, name: {target}}}\n  requiredAuthenticationRefs: [{{kind: ServiceAccount, name: {sa}}}]\n---\n"
    )
}

fn run_yaml(yaml: &str) -> Translation {
    translate(&index_from("linkerd.yaml", yaml))
}

fn translate(index: &controller::model::Index) -> Translation {
    controller::translate::translate(index, &TranslateOptions::default())
}

fn waypoint(t: &Translation) -> Waypoint {
    t.snapshot
        .resources
        .get(api::WAYPOINT_TYPE_URL)
        .and_then(|m| m.get("shop/waypoint"))
        .map(|r| api::unpack(&r.body).expect("decodes"))
        .expect("the waypoint is served")
}

fn linkerd_policy(w: &Waypoint, name: &str) -> AuthorizationPolicy {
    w.authorization_policies
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| {
            let names: Vec<_> = w.authorization_policies.iter().map(|p| &p.name).collect();
            panic!("{name} in {names:?}")
        })
}

fn principal_exact(s: &str) -> api::waypoint::StringMatch {
    api::waypoint::StringMatch {
        kind: Some(Kind::Exact(s.into())),
        ignore_case: false,
    }
}

#[test]
fn the_waypoint_enforces_the_server_and_ztunnel_admits_the_waypoint() {
    let t = run_yaml(&cluster(&policy("web-client", "Server/web", "client")));
    assert!(
        !t.problems.iter().any(|p| p.kind == "Pod"),
        "no warning about the waypoint: {:?}",
        t.problems
    );
    let p = linkerd_policy(&waypoint(&t), "linkerd_server_web_8080");
    assert_eq!(p.action, AuthorizationAction::Deny as i32);
    assert_eq!(p.scope, PolicyScope::Workloads as i32);
    let uids = &p.workloads.as_ref().expect("workloads").workload_uids;
    assert_eq!(uids.len(), 1);
    assert!(uids[0].ends_with("/Pod/shop/web"), "{uids:?}");
    assert!(!p.not_found);
    // One rule: on the service port and the pod's, for a client other than the client.
    assert_eq!(p.rules.len(), 1);
    let when = &p.rules[0].when;
    let principal = when
        .iter()
        .find(|c| c.key == ConditionKey::SourcePrincipal as i32)
        .expect("a principal condition");
    assert_eq!(
        principal.not_values,
        vec![principal_exact("cluster.local/ns/shop/sa/client")]
    );
    let port = when
        .iter()
        .find(|c| c.key == ConditionKey::DestinationPort as i32)
        .expect("a port condition");
    assert_eq!(port.port_values, vec![80, 8080]);

    // ztunnel: the Server's port admits the client and the waypoint.
    let name = "linkerd_server_web_8080_via_shop_waypoint";
    let auth = authorization(&t, "shop", name).expect("the ztunnel resource");
    let principals: Vec<_> = auth.rules[0]
        .clauses
        .iter()
        .flat_map(|c| &c.matches)
        .flat_map(|m| &m.not_principals)
        .filter_map(|m| match &m.match_type {
            Some(MatchType::Exact(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        principals,
        [
            "cluster.local/ns/shop/sa/client",
            "cluster.local/ns/shop/sa/waypoint"
        ]
    );
    assert!(
        workload(&t, "shop", "web")
            .unwrap()
            .authorization_policies
            .contains(&format!("shop/{name}"))
    );
}

#[test]
fn a_route_admits_its_clients_and_the_others_get_403_or_404() {
    let yaml = cluster(&(ROUTE.to_owned() + &policy("get-client", "HTTPRoute/get", "client")));
    let t = run_yaml(&yaml);
    assert!(
        t.problems.iter().all(|p| p.is_warning()),
        "{:?}",
        t.problems
    );
    let w = waypoint(&t);
    let refused = linkerd_policy(&w, "linkerd_server_web_8080");
    assert_eq!(refused.rules.len(), 1, "one match, one way to fail");
    let rule = &refused.rules[0];
    assert_eq!(
        rule.to[0].paths,
        vec![
            principal_exact("/orders"),
            api::waypoint::StringMatch {
                kind: Some(Kind::Prefix("/orders/".into())),
                ignore_case: false
            }
        ]
    );
    assert_eq!(rule.to[0].methods, vec![principal_exact("GET")]);
    let miss = linkerd_policy(&w, "linkerd_server_web_8080_no_route");
    assert!(miss.not_found);
    // Failing the match: another path, or another method.
    assert_eq!(miss.rules.len(), 2);
    assert_eq!(miss.rules[0].to[0].not_paths.len(), 2);
    assert_eq!(
        miss.rules[1].to[0].not_methods,
        vec![principal_exact("GET")]
    );
    // The Server's own policy would admit everywhere: with one, the route rule no longer
    // refuses its client, nor the Server's.
    let both = yaml + &policy("web-batch", "Server/web", "batch");
    let t = run_yaml(&both);
    let refused = linkerd_policy(&waypoint(&t), "linkerd_server_web_8080");
    let principals: Vec<_> = refused
        .rules
        .iter()
        .flat_map(|r| &r.when)
        .filter(|c| c.key == ConditionKey::SourcePrincipal as i32)
        .flat_map(|c| c.not_values.clone())
        .collect();
    assert_eq!(
        principals,
        vec![
            principal_exact("cluster.local/ns/shop/sa/batch"),
            principal_exact("cluster.local/ns/shop/sa/client")
        ]
    );
}

#[test]
fn without_a_waypoint_route_policies_admit_nobody_and_the_server_says_so() {
    let yaml = cluster(&(ROUTE.to_owned() + &policy("get-client", "HTTPRoute/get", "client")))
        .replace("labels: {istio.io/use-waypoint: waypoint}", "labels: {}");
    let t = run_yaml(&yaml);
    let auth = authorization(&t, "shop", "linkerd_server_web_8080").expect("ztunnel's rule");
    assert_eq!(auth.rules[0].clauses.len(), 1, "the port, refused to all");
    let warning = problems_about(&t, "Server", "web");
    assert!(
        warning
            .iter()
            .any(|p| p.is_warning() && p.message.contains("add a waypoint")),
        "{warning:?}"
    );
    // A policy on a route that is not attached to a Server is reported.
    let t = run_yaml(&cluster(&policy("lost", "HTTPRoute/nowhere", "client")));
    let lost = problems_about(&t, "AuthorizationPolicy.policy.linkerd.io", "lost");
    assert!(
        lost.iter().any(|p| p.field == "spec.targetRef.name"),
        "{lost:?}"
    );
}

#[test]
fn a_fresh_invalid_route_refuses_and_a_bad_edit_keeps_the_last_good_one() {
    let bad = ROUTE.replace("value: /orders", "value: orders");
    let yaml = cluster(&(bad.clone() + &policy("get-client", "HTTPRoute/get", "client")));
    let t = run_yaml(&yaml);
    let problem = problems_about(&t, "HTTPRoute.policy.linkerd.io", "get");
    assert!(
        problem
            .iter()
            .any(|p| !p.is_warning() && p.field.ends_with("path.value")),
        "{problem:?}"
    );
    // The stand-in matches every request and admits nobody: the rule refuses every client on
    // the port, whatever the path, and no request is a miss.
    let w = waypoint(&t);
    let refused = linkerd_policy(&w, "linkerd_server_web_8080");
    assert_eq!(refused.rules.len(), 1);
    assert!(
        !refused.rules[0]
            .when
            .iter()
            .any(|c| c.key == ConditionKey::SourcePrincipal as i32),
        "nobody is admitted"
    );
    assert_eq!(
        refused.rules[0].to[0].paths,
        vec![api::waypoint::StringMatch {
            kind: Some(Kind::Prefix("/".into())),
            ignore_case: false
        }]
    );

    // A good version, then a bad edit: the good one stays.
    let mut translator = Translator::new(TranslateOptions::default());
    let good = cluster(&(ROUTE.to_owned() + &policy("get-client", "HTTPRoute/get", "client")));
    let first = translator.translate(&index_from("linkerd.yaml", &good));
    let then = translator.translate(&index_from("linkerd.yaml", &yaml));
    assert_eq!(waypoint(&first), waypoint(&then));
    assert!(
        problems_about(&then, "HTTPRoute.policy.linkerd.io", "get")
            .iter()
            .any(|p| p.message.contains("last good")),
        "{:?}",
        then.problems
    );
}

/// An HTTPLocalRateLimitPolicy of the Server with `spec` lines.
fn rate_limit(spec: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: HTTPLocalRateLimitPolicy\nmetadata: {{name: web-rl, namespace: shop}}\nspec:\n  targetRef: {{group: policy.linkerd.io, kind: Server, name: web}}\n{spec}---\n"
    )
}

#[test]
fn a_rate_limit_of_the_server_is_enforced_per_pod_at_the_waypoint() {
    let spec = "  total: {requestsPerSecond: 100}\n  identity: {requestsPerSecond: 20}\n  overrides:\n  - requestsPerSecond: 25\n    clientRefs: [{kind: ServiceAccount, name: special}]\n";
    let t = run_yaml(&cluster(&rate_limit(spec)));
    assert!(
        t.problems.iter().all(|p| p.is_warning()),
        "{:?}",
        t.problems
    );
    let w = waypoint(&t);
    assert_eq!(w.workload_rate_limits.len(), 1);
    let l = &w.workload_rate_limits[0];
    assert_eq!((l.name.as_str(), l.namespace.as_str()), ("web-rl", "shop"));
    assert_eq!(l.ports, vec![80, 8080]);
    assert!(l.workload_uids[0].ends_with("/Pod/shop/web"));
    assert_eq!(l.total.as_ref().map(|b| b.max_tokens), Some(100));
    assert_eq!(l.per_identity.as_ref().map(|b| b.max_tokens), Some(20));
    assert_eq!(
        l.overrides[0].principals,
        ["cluster.local/ns/shop/sa/special"]
    );

    // Without a waypoint it is reported and not enforced.
    let unserved = cluster(&rate_limit(spec))
        .replace("labels: {istio.io/use-waypoint: waypoint}", "labels: {}");
    let t = run_yaml(&unserved);
    let warned = problems_about(&t, "HTTPLocalRateLimitPolicy", "web-rl");
    assert!(
        warned
            .iter()
            .any(|p| p.is_warning() && p.message.contains("add a waypoint")),
        "{warned:?}"
    );
}

#[test]
fn an_invalid_rate_limit_is_reported_and_a_bad_edit_keeps_the_last_good_one() {
    let good = cluster(&rate_limit("  identity: {requestsPerSecond: 4}\n"));
    let bad = cluster(&rate_limit(
        "  total: {requestsPerSecond: 2}\n  identity: {requestsPerSecond: 4}\n",
    ));
    let t = run_yaml(&bad);
    let refused = problems_about(&t, "HTTPLocalRateLimitPolicy", "web-rl");
    assert!(
        refused
            .iter()
            .any(|p| !p.is_warning() && p.field == "spec.identity.requestsPerSecond"),
        "{refused:?}"
    );
    assert!(waypoint(&t).workload_rate_limits.is_empty());
    let mut translator = Translator::new(TranslateOptions::default());
    let first = translator.translate(&index_from("linkerd.yaml", &good));
    let then = translator.translate(&index_from("linkerd.yaml", &bad));
    assert_eq!(
        waypoint(&first).workload_rate_limits,
        waypoint(&then).workload_rate_limits
    );
    assert_eq!(waypoint(&then).workload_rate_limits.len(), 1);
}

#[test]
fn overlapping_routes_are_judged_by_the_first_in_precedence() {
    // `all` (every path) admits the client, `admin` (under /admin) the batch: a request under
    // /admin is judged by `admin` alone, as Linkerd picks the longest prefix.
    let routes = r#"apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: all, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web}]
  rules: [{matches: [{path: {value: /}}]}]
---
apiVersion: policy.linkerd.io/v1beta3
kind: HTTPRoute
metadata: {name: admin, namespace: shop}
spec:
  parentRefs: [{group: policy.linkerd.io, kind: Server, name: web}]
  rules: [{matches: [{path: {value: /admin}}]}]
---
"#;
    let yaml = cluster(
        &(routes.to_owned()
            + &policy("all-client", "HTTPRoute/all", "client")
            + &policy("admin-batch", "HTTPRoute/admin", "batch")),
    );
    let t = run_yaml(&yaml);
    let refused = linkerd_policy(&waypoint(&t), "linkerd_server_web_8080");
    assert_eq!(refused.rules.len(), 2, "{:?}", refused.rules);
    let judged_by = |rule: &api::waypoint::AuthorizationRule| -> Vec<api::waypoint::StringMatch> {
        rule.when
            .iter()
            .filter(|c| c.key == ConditionKey::SourcePrincipal as i32)
            .flat_map(|c| c.not_values.clone())
            .collect()
    };
    // First the /admin rule (longer prefix), then the catch-all, which leaves /admin out.
    assert_eq!(
        judged_by(&refused.rules[0]),
        vec![principal_exact("cluster.local/ns/shop/sa/batch")]
    );
    assert_eq!(refused.rules[0].to[0].not_paths, vec![]);
    assert_eq!(
        judged_by(&refused.rules[1]),
        vec![principal_exact("cluster.local/ns/shop/sa/client")]
    );
    assert_eq!(
        refused.rules[1].to[0].not_paths,
        vec![
            principal_exact("/admin"),
            api::waypoint::StringMatch {
                kind: Some(Kind::Prefix("/admin/".into())),
                ignore_case: false
            }
        ]
    );
    assert!(
        !t.problems.iter().any(|p| p.message.contains("overlap")),
        "{:?}",
        t.problems
    );
}
