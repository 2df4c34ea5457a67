//! AuthorizationPolicy translation, from `fixtures/authorization*.yaml`.

#[path = "translate_common.rs"]
mod common;

use api::security::{
    Action, Address, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};
use common::*;
use controller::model::Index;
use controller::translate::{TranslateOptions, Translation, Translator};
use test_support::manifests::running_pod;

fn exact(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Exact(s.into())),
    }
}
fn prefix(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Prefix(s.into())),
    }
}
fn suffix(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Suffix(s.into())),
    }
}
fn presence() -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Presence(())),
    }
}
fn ip(bytes: &[u8], length: u32) -> Address {
    Address {
        address: bytes.to_vec(),
        length,
    }
}

#[test]
fn scopes() {
    let t = run(&["authorization.yaml"]);
    let global = authorization(&t, "istio-system", "deny-blocked-ns").unwrap();
    assert_eq!(global.scope, Scope::Global as i32);
    assert_eq!(global.action, Action::Deny as i32);
    assert_eq!(
        global.rules,
        vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match {
                    namespaces: vec![exact("blocked")],
                    ..Default::default()
                }]
            }]
        }]
    );
    let ns = authorization(&t, "shop", "allow-frontends").unwrap();
    assert_eq!(ns.scope, Scope::Namespace as i32);
    assert_eq!(ns.action, Action::Allow as i32);
    let sel = authorization(&t, "shop", "api-allow-web").unwrap();
    assert_eq!(sel.scope, Scope::WorkloadSelector as i32);
    let root_sel = authorization(&t, "istio-system", "api-everywhere").unwrap();
    assert_eq!(root_sel.scope, Scope::WorkloadSelector as i32);
}

#[test]
fn selected_workloads_reference_their_policies() {
    let t = run(&["authorization.yaml"]);
    let api = workload(&t, "shop", "api-1").unwrap();
    assert_eq!(
        api.authorization_policies,
        vec!["istio-system/api-everywhere", "shop/api-allow-web"]
    );
    let web = workload(&t, "shop", "web-1").unwrap();
    assert_eq!(web.authorization_policies, vec!["shop/deny-delete"]);
}

#[test]
fn every_l4_field() {
    let t = run(&["authorization.yaml"]);
    let a = authorization(&t, "shop", "allow-frontends").unwrap();
    assert_eq!(a.name, "allow-frontends");
    assert_eq!(a.namespace, "shop");
    assert_eq!(a.rules.len(), 1);
    let clauses = &a.rules[0].clauses;
    // to, from, then one clause per `when`.
    assert_eq!(clauses.len(), 4);
    assert_eq!(
        clauses[0].matches,
        vec![Match {
            destination_ports: vec![8080, 9090],
            not_destination_ports: vec![15000],
            ..Default::default()
        }]
    );
    let v6: Vec<u8> = "fd00::"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    assert_eq!(
        clauses[1].matches,
        vec![
            Match {
                principals: vec![
                    exact("cluster.local/ns/shop/sa/frontend"),
                    prefix("cluster.local/ns/web/"),
                    suffix("/sa/admin"),
                    presence(),
                ],
                not_principals: vec![exact("cluster.local/ns/shop/sa/evil")],
                namespaces: vec![exact("shop")],
                not_namespaces: vec![prefix("test-")],
                source_ips: vec![ip(&[10, 244, 0, 0], 16), ip(&[192, 168, 1, 7], 32)],
                not_source_ips: vec![ip(&[10, 244, 9, 0], 24), ip(&v6, 8)],
                service_accounts: vec![
                    ServiceAccountMatch {
                        namespace: "shop".into(),
                        service_account: "frontend".into()
                    },
                    ServiceAccountMatch {
                        namespace: "ops".into(),
                        service_account: "admin".into()
                    },
                ],
                ..Default::default()
            },
            Match {
                namespaces: vec![exact("monitoring")],
                ..Default::default()
            }
        ]
    );
    assert_eq!(
        clauses[2].matches,
        vec![Match {
            destination_ports: vec![8080],
            ..Default::default()
        }]
    );
    assert_eq!(
        clauses[3].matches,
        vec![Match {
            not_source_ips: vec![ip(&[10, 244, 3, 3], 32)],
            ..Default::default()
        }]
    );
    assert!(problems_about(&t, "AuthorizationPolicy", "allow-frontends").is_empty());
}

#[test]
fn allow_rule_with_http_attributes_is_dropped() {
    let t = run(&["authorization.yaml"]);
    let a = authorization(&t, "shop", "api-allow-web").unwrap();
    assert_eq!(a.rules.len(), 1, "only the L4 rule stays");
    assert_eq!(
        a.rules[0].clauses[0].matches[0].principals,
        vec![exact("cluster.local/ns/shop/sa/default")]
    );
    let p = problems_about(&t, "AuthorizationPolicy", "api-allow-web");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.starts_with("warning:"), "{}", p[0]);
    assert!(p[0].message.contains("methods, paths"), "{}", p[0]);
    assert!(p[0].message.contains("ALLOW"), "{}", p[0]);
}

#[test]
fn deny_rule_keeps_its_l4_parts() {
    let t = run(&["authorization.yaml"]);
    let a = authorization(&t, "shop", "deny-delete").unwrap();
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!(
        a.rules,
        vec![Rule {
            clauses: vec![
                Clause {
                    matches: vec![Match {
                        destination_ports: vec![8080],
                        ..Default::default()
                    }]
                },
                Clause {
                    matches: vec![Match {
                        not_namespaces: vec![exact("shop")],
                        ..Default::default()
                    }]
                },
            ]
        }]
    );
    let p = problems_about(&t, "AuthorizationPolicy", "deny-delete");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].message.contains("methods, request.headers[x-debug]"),
        "{}",
        p[0]
    );
}

#[test]
fn empty_spec_denies_all_and_empty_rule_allows_all() {
    let t = run(&["authorization.yaml"]);
    let deny_all = authorization(&t, "shop", "deny-all").unwrap();
    assert_eq!(deny_all.action, Action::Allow as i32);
    assert!(deny_all.rules.is_empty());
    let allow_all = authorization(&t, "shop", "allow-all").unwrap();
    assert_eq!(allow_all.rules, vec![Rule { clauses: vec![] }]);
}

#[test]
fn unsupported_and_waypoint_policies() {
    let t = run(&["authorization.yaml"]);
    assert!(authorization(&t, "shop", "audit-everything").is_none());
    let p = problems_about(&t, "AuthorizationPolicy", "audit-everything");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].field, "spec.action");
    assert!(p[0].message.contains("AUDIT"));
    // targetRefs policies belong to the waypoint.
    assert!(authorization(&t, "shop", "waypoint-l7").is_none());
    assert!(problems_about(&t, "AuthorizationPolicy", "waypoint-l7").is_empty());
    assert_eq!(count(&t, api::AUTHORIZATION_TYPE_URL), 7);
}

#[test]
fn invalid_policies_are_reported_with_their_field_and_fail_closed() {
    let t = run(&["authorization-invalid.yaml"]);
    let field = |name: &str| {
        let p = problems_about(&t, "AuthorizationPolicy", name);
        assert_eq!(p.len(), 1, "{name}: {:?}", t.problems);
        (p[0].field.clone(), p[0].to_string())
    };
    // What stands in: a DENY matching everything, or an ALLOW matching nothing.
    let denies_all = |name: &str| {
        let a = authorization(&t, "shop", name).expect(name);
        assert_eq!(a.action, Action::Deny as i32, "{name}");
        assert_eq!(a.rules, vec![Rule { clauses: vec![] }], "{name}");
        assert!(field(name).1.contains("denies every request"), "{name}");
        a
    };
    let allows_nothing = |name: &str| {
        let a = authorization(&t, "shop", name).expect(name);
        assert_eq!(a.action, Action::Allow as i32, "{name}");
        assert!(a.rules.is_empty(), "{name}");
        assert!(field(name).1.contains("allows nothing"), "{name}");
        a
    };
    let (f, text) = field("bad-action");
    assert_eq!(f, "spec.action");
    assert!(text.contains("\"PERMIT\""), "{text}");
    assert!(text.starts_with(
        "fixtures/authorization-invalid.yaml: AuthorizationPolicy shop/bad-action: field spec.action:"
    ));
    denies_all("bad-action");
    let (f, text) = field("bad-principal");
    assert_eq!(f, "spec.rules[0].from[0].source.principals[1]");
    assert!(text.contains("only at its start or end"), "{text}");
    allows_nothing("bad-principal");
    assert_eq!(
        field("bad-ip").0,
        "spec.rules[0].from[0].source.ipBlocks[0]"
    );
    allows_nothing("bad-ip");
    assert_eq!(
        field("bad-port").0,
        "spec.rules[0].to[0].operation.ports[0]"
    );
    allows_nothing("bad-port");
    // A wrong type is a decoding problem, with location; a selector that cannot be read
    // leaves the policy namespace-wide.
    let (f, text) = field("bad-selector");
    assert_eq!(f, "spec.selector.matchLabels");
    assert!(text.contains("line 53, column 18"), "{text}");
    assert!(text.contains("document 5"), "{text}");
    let namespace_wide = allows_nothing("bad-selector");
    assert_eq!(namespace_wide.scope, Scope::Namespace as i32);
    // Rules of the wrong type: the readable selector and action stay.
    let (f, _) = field("bad-type-deny");
    assert_eq!(f, "spec.rules[0].from[0].source.namespaces");
    let selected = denies_all("bad-type-deny");
    assert_eq!(selected.scope, Scope::WorkloadSelector as i32);
    // The valid one is unaffected.
    let good = authorization(&t, "shop", "good").unwrap();
    assert_eq!(good.rules.len(), 1);
    assert!(problems_about(&t, "AuthorizationPolicy", "good").is_empty());
}

#[test]
fn last_good_translation_stays_in_force() {
    let good = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/a/sa/b"]}}]}]
---
"#
    .to_owned()
        + &running_pod("shop", "api-1", &[("app", "api")], "n", "10.244.1.30");
    let bad = good.replace("cluster.local/ns/a/sa/b", "cluster.local/*/sa/b");
    let mut translator = Translator::new(TranslateOptions::default());
    let first = translator.translate(&index_from("p.yaml", &good));
    assert!(first.problems.is_empty(), "{:?}", first.problems);
    let second = translator.translate(&index_from("p.yaml", &bad));
    assert_eq!(
        authorization(&second, "shop", "p"),
        authorization(&first, "shop", "p"),
        "last good version served"
    );
    assert_eq!(
        workload(&second, "shop", "api-1")
            .unwrap()
            .authorization_policies,
        vec!["shop/p"]
    );
    assert_eq!(second.problems.len(), 1);
    assert!(
        second.problems[0]
            .message
            .contains("keeping its last good version"),
        "{}",
        second.problems[0]
    );
    // Removed from the index: gone (no ghost), and forgotten.
    let third = translator.translate(&Index::new());
    assert_eq!(count(&third, api::AUTHORIZATION_TYPE_URL), 0);
    // Invalid with no last good version: it fails closed (an ALLOW allowing nothing).
    let allows_nothing = |t: &Translation| {
        let p = authorization(t, "shop", "p").expect("stands in");
        p.action == Action::Allow as i32 && p.rules.is_empty()
    };
    let fourth = translator.translate(&index_from("p.yaml", &bad));
    assert!(allows_nothing(&fourth));
    // The stateless function has no memory.
    let stateless =
        controller::translate::translate(&index_from("p.yaml", &bad), &TranslateOptions::default());
    assert!(allows_nothing(&stateless));
}

#[test]
fn custom_is_enforced_as_deny_of_what_it_would_send_to_its_provider() {
    let yaml = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  action: CUSTOM
  provider: {name: ext-authz}
  rules: [{to: [{operation: {ports: ["8080"]}}]}]
"#;
    let t = controller::translate::translate(&index_from("p.yaml", yaml), &Default::default());
    let ext = authorization(&t, "shop", "ext").expect("enforced");
    assert_eq!(ext.action, Action::Deny as i32);
    assert_eq!(
        ext.rules,
        vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match {
                    destination_ports: vec![8080],
                    ..Default::default()
                }]
            }]
        }]
    );
    let p = problems_about(&t, "AuthorizationPolicy", "ext");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "spec.action");
    assert!(p[0].message.contains("enforced as DENY"), "{}", p[0]);
}
