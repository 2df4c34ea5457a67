//! AuthorizationPolicy at the waypoint (targetRefs and selector policies,
//! L4 and L7 parts) and waypoint admission at ztunnel, from
//! `fixtures/routes-authz.yaml` on `fixtures/routes-mesh.yaml`.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use api::security::{Action, Scope};
use api::waypoint::{
    AuthorizationAction, AuthorizationPolicy, Condition, ConditionKey, IpBlock, Operation,
    PolicyScope, Source,
};
use common::*;
use routes::*;

fn t() -> controller::translate::Translation {
    run(&["routes-mesh.yaml", "routes-authz.yaml"])
}

fn at_waypoint(t: &controller::translate::Translation, name: &str) -> Option<AuthorizationPolicy> {
    shop(t)
        .authorization_policies
        .into_iter()
        .find(|p| p.name == name)
}

fn ignore_case(mut m: api::waypoint::StringMatch) -> api::waypoint::StringMatch {
    m.ignore_case = true;
    m
}

#[test]
fn gateway_policy_with_every_l4_and_l7_field() {
    let t = t();
    let p = at_waypoint(&t, "gateway-l7").unwrap();
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.action, AuthorizationAction::Allow as i32);
    assert_eq!(p.scope, PolicyScope::Waypoint as i32);
    assert_eq!(p.rules.len(), 1);
    let r = &p.rules[0];
    assert_eq!(
        r.from,
        [Source {
            namespaces: vec![exact("frontend")],
            principals: vec![exact("cluster.local/ns/frontend/sa/web")],
            not_principals: vec![exact("cluster.local/ns/frontend/sa/intruder")],
            remote_ip_blocks: vec![IpBlock {
                address: vec![203, 0, 113, 0],
                prefix_len: 24
            }],
            ..Default::default()
        }]
    );
    assert_eq!(
        r.to,
        [Operation {
            methods: vec![exact("GET"), prefix("HE")],
            paths: vec![prefix("/api/"), suffix(".json")],
            not_paths: vec![exact("/api/admin")],
            hosts: vec![ignore_case(prefix("reviews"))],
            ports: vec![9080],
            ..Default::default()
        }]
    );
    assert_eq!(
        r.when,
        [
            Condition {
                key: ConditionKey::RequestHeader as i32,
                header: "x-token".into(),
                values: vec![prefix("secret")],
                ..Default::default()
            },
            Condition {
                key: ConditionKey::SourceIp as i32,
                not_ip_values: vec![IpBlock {
                    address: vec![10, 0, 0, 1],
                    prefix_len: 32
                }],
                ..Default::default()
            },
            Condition {
                key: ConditionKey::DestinationPort as i32,
                port_values: vec![9080],
                ..Default::default()
            },
        ]
    );
}

#[test]
fn service_class_and_empty_policies() {
    let t = t();
    let deny = at_waypoint(&t, "reviews-deny").unwrap();
    assert_eq!(deny.action, AuthorizationAction::Deny as i32);
    assert_eq!(deny.scope, PolicyScope::Services as i32);
    assert_eq!(
        deny.services,
        [host("reviews-v1"), host("reviews")],
        "sorted"
    );
    assert_eq!(deny.rules[0].to[0].paths, [suffix("/admin")]);
    assert_eq!(deny.rules[0].to[0].not_methods, [exact("GET")]);
    // `direct` has no waypoint: reported, reference ignored.
    let p = problems_about(&t, "AuthorizationPolicy", "reviews-deny");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "spec.targetRefs[2].name");
    // Empty spec: ALLOW nothing, so everything through the waypoint is denied.
    let all = at_waypoint(&t, "deny-all").unwrap();
    assert_eq!(
        (all.action, all.scope),
        (
            AuthorizationAction::Allow as i32,
            PolicyScope::Waypoint as i32
        )
    );
    assert!(all.rules.is_empty());
    // Root namespace, the waypoint GatewayClass: every waypoint.
    let mesh = at_waypoint(&t, "mesh-deny").unwrap();
    assert_eq!(mesh.namespace, "istio-system");
    assert_eq!(mesh.scope, PolicyScope::Waypoint as i32);
    // None of these is for ztunnel.
    for name in ["gateway-l7", "reviews-deny", "deny-all", "jwt-allow"] {
        assert!(authorization(&t, "shop", name).is_none(), "{name}");
    }
}

#[test]
fn jwt_attributes_fail_closed_with_a_problem() {
    let t = t();
    // ALLOW: the JWT rule can never match and is dropped; the other stays.
    let allow = at_waypoint(&t, "jwt-allow").unwrap();
    assert_eq!(allow.rules.len(), 1);
    assert_eq!(allow.rules[0].to[0].methods, [exact("OPTIONS")]);
    // DENY: enforced without the JWT condition, which denies more.
    let deny = at_waypoint(&t, "jwt-deny").unwrap();
    assert_eq!(deny.rules.len(), 1);
    assert!(deny.rules[0].when.is_empty());
    for (name, found) in [
        ("jwt-allow", "requestPrincipals"),
        ("jwt-deny", "request.auth.claims[iss]"),
    ] {
        let p = problems_about(&t, "AuthorizationPolicy", name);
        assert_eq!(p.len(), 1, "{name}: {p:?}");
        assert!(
            p[0].message.contains("JWT attributes are not supported"),
            "{}",
            p[0]
        );
        assert!(p[0].message.contains(found), "{}", p[0]);
    }
    // An unknown condition key is invalid: the ALLOW fails closed, allowing nothing.
    let bad = at_waypoint(&t, "bad-key").expect("stands in");
    assert_eq!(bad.action, AuthorizationAction::Allow as i32);
    assert!(bad.rules.is_empty());
    let p = problems_about(&t, "AuthorizationPolicy", "bad-key");
    assert_eq!(p[0].field, "spec.rules[0].when[0].key");
    assert!(
        p[0].message.contains("; the policy allows nothing"),
        "{}",
        p[0]
    );
}

#[test]
fn selector_policy_is_enforced_at_the_waypoint() {
    let t = t();
    let p = at_waypoint(&t, "reviews-selector").unwrap();
    assert_eq!(p.scope, PolicyScope::Workloads as i32);
    let sel = p.workloads.as_ref().unwrap();
    assert_eq!(sel.namespace, "shop");
    assert_eq!(sel.labels.get("app").map(String::as_str), Some("reviews"));
    assert_eq!(
        sel.workload_uids,
        [
            "Kubernetes//Pod/shop/reviews-v1-1",
            "Kubernetes//Pod/shop/reviews-v2-1"
        ]
    );
    // L4 and L7 parts, with the caller's identity.
    assert_eq!(
        p.rules[0].from[0].principals,
        [exact("cluster.local/ns/frontend/sa/web")]
    );
    assert_eq!(p.rules[0].to[0].methods, [exact("GET")]);
    // ztunnel still has the policy (its HTTP rule dropped, failing closed);
    // no warning, since the waypoint enforces the HTTP parts.
    let z = authorization(&t, "shop", "reviews-selector").unwrap();
    assert_eq!(z.scope, Scope::WorkloadSelector as i32);
    assert!(z.rules.is_empty());
    assert!(problems_about(&t, "AuthorizationPolicy", "reviews-selector").is_empty());
    // A workload without a waypoint: ztunnel only, with the warning.
    assert!(at_waypoint(&t, "direct-selector").is_none());
    let p = problems_about(&t, "AuthorizationPolicy", "direct-selector");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("use a waypoint"), "{}", p[0]);
}

#[test]
fn ztunnel_admits_the_waypoint() {
    let t = t();
    let name = "istio_allow_waypoint_shop_waypoint";
    let allow = authorization(&t, "shop", name).unwrap();
    assert_eq!(allow.action, Action::Allow as i32);
    assert_eq!(allow.scope, Scope::WorkloadSelector as i32);
    let principals = &allow.rules[0].clauses[0].matches[0].principals;
    assert_eq!(principals.len(), 1);
    assert_eq!(
        principals[0].match_type,
        Some(api::security::string_match::MatchType::Exact(
            "cluster.local/ns/shop/sa/waypoint".into()
        ))
    );
    // Referenced by the workloads reached through the waypoint that an
    // ALLOW policy restricts...
    for pod in ["reviews-v1-1", "reviews-v2-1"] {
        let w = workload(&t, "shop", pod).unwrap();
        assert_eq!(
            w.authorization_policies,
            [format!("shop/{name}"), "shop/reviews-selector".to_string()],
            "{pod}"
        );
    }
    // ...not by those no ALLOW policy restricts (they admit everyone), nor
    // by those without a waypoint.
    assert!(
        workload(&t, "shop", "ratings-1")
            .unwrap()
            .authorization_policies
            .is_empty()
    );
    assert_eq!(
        workload(&t, "shop", "direct-1")
            .unwrap()
            .authorization_policies,
        ["shop/direct-selector"]
    );
}

#[test]
fn no_admission_policy_without_allow_policies() {
    let t = run(&["routes-mesh.yaml"]);
    assert_eq!(count(&t, api::AUTHORIZATION_TYPE_URL), 0);
    assert!(shop(&t).authorization_policies.is_empty());
}

#[test]
fn last_good_waypoint_policy_stays_in_force() {
    let policy = |methods: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: shop}}\nspec:\n  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]\n  rules: [{{to: [{{operation: {{paths: [\"{methods}\"]}}}}]}}]\n"
        )
    };
    let (origin, mesh) = fixture("routes-mesh.yaml");
    let index = |p: &str| index_from(&origin, &format!("{mesh}\n---\n{p}"));
    let mut translator =
        controller::translate::Translator::new(controller::translate::TranslateOptions::default());
    let first = translator.translate(&index(&policy("/api/*")));
    let good = at_waypoint(&first, "p").unwrap();
    assert_eq!(good.rules[0].to[0].paths, [prefix("/api/")]);
    let second = translator.translate(&index(&policy("/a*i")));
    assert_eq!(at_waypoint(&second, "p"), Some(good));
    let p = problems_about(&second, "AuthorizationPolicy", "p");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].field, "spec.rules[0].to[0].operation.paths[0]");
    assert!(
        p[0].message.ends_with("; keeping its last good version"),
        "{}",
        p[0]
    );
}

#[test]
fn a_waypoint_policy_that_cannot_be_read_denies_everything_through_its_target() {
    let broken = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken-deny, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: "/admin"}}]}]
"#;
    let mut index = index_of(&["routes-mesh.yaml", "routes-authz.yaml"]);
    index.replace_origin("broken.yaml", objects("broken.yaml", broken), Vec::new());
    let t = controller::translate::translate(&index, &Default::default());
    let broken = at_waypoint(&t, "broken-deny").expect("stands in");
    assert_eq!(broken.action, AuthorizationAction::Deny as i32);
    assert_eq!(broken.scope, PolicyScope::Waypoint as i32);
    assert_eq!(
        broken.rules,
        vec![Default::default()],
        "one rule matching everything"
    );
    let p = problems_about(&t, "AuthorizationPolicy", "broken-deny");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "spec.rules[0].to[0].operation.paths");
    assert!(p[0].message.contains("denies every request"), "{}", p[0]);
    // Not for ztunnel: it targets the waypoint.
    assert!(authorization(&t, "shop", "broken-deny").is_none());
}
