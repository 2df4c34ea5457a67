//! Linkerd's authorization policy → ztunnel DENY policies: Servers, AuthorizationPolicies,
//! MeshTLS / Network authentications, default inbound policies, and failing closed.

#[path = "translate_common.rs"]
mod common;

use api::security::{
    Action, Address, Authorization, Clause, Match, Rule, Scope, StringMatch,
    string_match::MatchType,
};
use common::*;
use controller::model::Problem;
use controller::translate::{TranslateOptions, Translation, Translator};

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

/// Namespace `shop` (ambient, optionally annotated) with the `web` pod (ports 8080 `http` and
/// 9090 `admin`, label app=web, tier=front) and the `db` pod (port 5432, app=db).
fn cluster(annotation: Option<&str>) -> String {
    let annotations = annotation.map_or(String::new(), |p| {
        format!("\n  annotations: {{config.linkerd.io/default-inbound-policy: {p}}}")
    });
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {{istio.io/dataplane-mode: ambient}}{annotations}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: shop, labels: {{app: web, tier: front}}}}
spec:
  serviceAccountName: web
  containers:
  - name: web
    ports: [{{name: http, containerPort: 8080}}, {{name: admin, containerPort: 9090}}]
status: {{phase: Running, podIP: 10.0.0.5}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db, namespace: shop, labels: {{app: db}}}}
spec:
  containers:
  - name: db
    ports: [{{name: sql, containerPort: 5432}}]
status: {{phase: Running, podIP: 10.0.0.6}}
---
"#
    )
}

/// A Server `name` selecting app=`app` on `port`, with `extra` spec lines.
fn server(name: &str, app: &str, port: &str, extra: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1beta3\nkind: Server\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  port: {port}\n{extra}---\n"
    )
}

/// An AuthorizationPolicy on `target` (a Server name, or `ns` for the namespace) requiring
/// `refs` (YAML flow entries).
fn policy(name: &str, target: &str, refs: &[&str]) -> String {
    let target = if target == "ns" {
        "{kind: Namespace, name: shop}".to_owned()
    } else {
        format!("{{group: policy.linkerd.io, kind: Server, name: {target}}}")
    };
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  targetRef: {target}\n  requiredAuthenticationRefs: [{}]\n---\n",
        refs.join(", ")
    )
}

fn mesh_tls(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n---\n"
    )
}

fn network(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: policy.linkerd.io/v1alpha1\nkind: NetworkAuthentication\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n---\n"
    )
}

const FRIENDS: &str = "{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: friends}";
const OFFICE: &str = "{group: policy.linkerd.io, kind: NetworkAuthentication, name: office}";

fn run_yaml(yaml: &str) -> Translation {
    controller::translate::translate(
        &index_from("linkerd.yaml", yaml),
        &TranslateOptions::default(),
    )
}

fn linkerd_names(t: &Translation) -> Vec<String> {
    t.snapshot
        .of_type(api::AUTHORIZATION_TYPE_URL)
        .map(|(name, _)| name.clone())
        .filter(|n| n.contains("linkerd_"))
        .collect()
}

fn references(t: &Translation, pod: &str) -> Vec<String> {
    workload(t, "shop", pod).unwrap().authorization_policies
}

fn port_only(port: u32) -> Clause {
    Clause {
        matches: vec![Match {
            destination_ports: vec![port],
            ..Default::default()
        }],
    }
}

fn not_principals(p: Vec<StringMatch>) -> Match {
    Match {
        not_principals: p,
        ..Default::default()
    }
}

fn rule(t: &Translation, name: &str) -> Rule {
    let auth: Authorization = authorization(t, "shop", name).unwrap_or_else(|| {
        panic!("{name} in {:?}", linkerd_names(t));
    });
    assert_eq!(auth.action, Action::Deny as i32);
    assert_eq!(auth.scope, Scope::WorkloadSelector as i32);
    assert_eq!(auth.rules.len(), 1);
    auth.rules[0].clone()
}

fn errors(t: &Translation) -> Vec<&Problem> {
    t.problems.iter().filter(|p| !p.is_warning()).collect()
}

#[test]
fn without_linkerd_objects_or_annotations_nothing_is_added() {
    let t = run_yaml(&cluster(None));
    assert!(linkerd_names(&t).is_empty());
    assert!(references(&t, "web").is_empty());
    let t = run_yaml(&cluster(Some("all-unauthenticated")));
    assert!(linkerd_names(&t).is_empty());
}

#[test]
fn a_server_refuses_its_port_to_clients_no_policy_authorizes() {
    let yaml = cluster(None)
        + &server("web", "web", "8080", "")
        + &mesh_tls(
            "friends",
            r#"{identities: ["front.shop.serviceaccount.identity.linkerd.cluster.local"]}"#,
        )
        + &policy("web-friends", "web", &[FRIENDS]);
    let t = run_yaml(&yaml);
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
    assert_eq!(
        rule(&t, "linkerd_server_web"),
        Rule {
            clauses: vec![
                port_only(8080),
                Clause {
                    matches: vec![not_principals(vec![exact(
                        "cluster.local/ns/shop/sa/front"
                    )])]
                },
            ]
        }
    );
    assert_eq!(references(&t, "web"), vec!["shop/linkerd_server_web"]);
    assert!(
        references(&t, "db").is_empty(),
        "the Server selects web only"
    );

    // Without any authorization, the port is refused to everybody.
    let t = run_yaml(&(cluster(None) + &server("web", "web", "8080", "")));
    assert_eq!(
        rule(&t, "linkerd_server_web"),
        Rule {
            clauses: vec![port_only(8080)]
        }
    );
}

#[test]
fn named_ports_and_expressions_select_per_pod() {
    let yaml = cluster(None)
        + "apiVersion: policy.linkerd.io/v1beta1\nkind: Server\nmetadata: {name: front, namespace: shop}\nspec:\n  podSelector:\n    matchExpressions:\n    - {key: tier, operator: In, values: [front, back]}\n    - {key: env, operator: DoesNotExist}\n  port: admin\n---\n"
        + &server("undeclared", "db", "6000", "");
    let t = run_yaml(&yaml);
    assert_eq!(
        rule(&t, "linkerd_server_front_9090").clauses,
        vec![port_only(9090)]
    );
    assert_eq!(
        references(&t, "web"),
        vec!["shop/linkerd_server_front_9090"]
    );
    // Linkerd considers only declared ports: a Server on another one guards nothing, said so.
    assert!(references(&t, "db").is_empty());
    assert!(t.problems.iter().any(|p| p.name == "undeclared"
        && p.field == "spec.port"
        && p.is_warning()
        && p.message.contains("guards nothing")));
}

#[test]
fn authentications_map_identities_service_accounts_and_networks() {
    let yaml = cluster(None)
        + &server("web", "web", "http", "")
        + &mesh_tls(
            "friends",
            r#"{identities: ["*.ops.serviceaccount.identity.linkerd.cluster.local"], identityRefs: [{kind: ServiceAccount, name: front}, {kind: Namespace, name: tools}, {kind: ServiceAccount, name: "*", namespace: qa}]}"#,
        )
        + &network(
            "office",
            r#"{networks: [{cidr: 192.168.0.0/16, except: [192.168.0.0/17]}, {cidr: "fd00::/8"}]}"#,
        )
        + &policy("both", "web", &[FRIENDS, OFFICE])
        + &policy(
            "as-sa",
            "ns",
            &["{kind: ServiceAccount, name: batch, namespace: jobs}"],
        );
    let t = run_yaml(&yaml);
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
    let mut v6 = vec![0xfd];
    v6.resize(16, 0);
    assert_eq!(
        rule(&t, "linkerd_server_web_8080"),
        Rule {
            clauses: vec![
                port_only(8080),
                // The namespace-wide policy is another way in (policies in name order).
                Clause {
                    matches: vec![not_principals(vec![exact(
                        "cluster.local/ns/jobs/sa/batch"
                    )])]
                },
                // Both authentications required: failing either refuses.
                Clause {
                    matches: vec![
                        not_principals(vec![
                            prefix("cluster.local/ns/ops/sa/"),
                            exact("cluster.local/ns/shop/sa/front"),
                            prefix("cluster.local/ns/tools/sa/"),
                            prefix("cluster.local/ns/qa/sa/"),
                        ]),
                        Match {
                            not_source_ips: vec![ip(&[192, 168, 128, 0], 17), ip(&v6, 8)],
                            ..Default::default()
                        },
                    ]
                },
            ]
        }
    );
}

#[test]
fn a_second_identity_or_network_authentication_is_warned_about_and_intersected() {
    let yaml = cluster(None)
        + &server("web", "web", "http", "")
        + &mesh_tls("friends", "{identities: [\"*\"]}")
        + &mesh_tls(
            "family",
            "{identityRefs: [{kind: ServiceAccount, name: front}]}",
        )
        + &network("office", "{networks: [{cidr: 192.168.0.0/16}]}")
        + &policy(
            "strict",
            "web",
            &[
                FRIENDS,
                OFFICE,
                "{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: family}",
            ],
        );
    let t = run_yaml(&yaml);
    assert!(errors(&t).is_empty(), "{:?}", t.problems);
    let warned: Vec<(&str, &str)> = t
        .problems
        .iter()
        .filter(|p| p.name == "strict")
        .map(|p| (p.field.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].0, "spec.requiredAuthenticationRefs[2]");
    assert!(
        warned[0]
            .1
            .contains("one MeshTLSAuthentication or ServiceAccount per policy")
    );
    // Still enforced, as the intersection: failing any of the three refuses (the port's
    // clause, then one clause matching a client that misses any of them).
    let clauses = rule(&t, "linkerd_server_web_8080").clauses;
    assert_eq!(clauses.len(), 2);
    assert_eq!(clauses[1].matches.len(), 3);
}

#[test]
fn default_inbound_policies_govern_the_ports_no_server_selects() {
    let with_server = |annotation: &str| {
        run_yaml(&(cluster(Some(annotation)) + &server("web", "web", "8080", "")))
    };
    let t = with_server("all-authenticated");
    assert_eq!(
        rule(&t, "linkerd_default_all-authenticated_except_8080"),
        Rule {
            clauses: vec![
                Clause {
                    matches: vec![Match {
                        not_destination_ports: vec![8080],
                        ..Default::default()
                    }]
                },
                Clause {
                    matches: vec![not_principals(vec![presence()])]
                },
            ]
        }
    );
    // The db pod has no Server: its default covers every port.
    assert_eq!(
        rule(&t, "linkerd_default_all-authenticated").clauses,
        vec![Clause {
            matches: vec![not_principals(vec![presence()])]
        }]
    );
    assert_eq!(
        references(&t, "db"),
        vec!["shop/linkerd_default_all-authenticated"]
    );

    let t = with_server("deny");
    assert_eq!(rule(&t, "linkerd_default_deny").clauses, Vec::new());

    // cluster-* admit the cluster networks (Linkerd's default list unless configured).
    let t = with_server("cluster-unauthenticated");
    let cluster_rule = rule(&t, "linkerd_default_cluster-unauthenticated");
    assert_eq!(cluster_rule.clauses[0].matches[0].not_source_ips.len(), 5);
    let options = TranslateOptions {
        cluster_networks: vec!["10.0.0.0/16".into()],
        ..TranslateOptions::default()
    };
    let t = controller::translate::translate(
        &index_from("l.yaml", &cluster(Some("cluster-authenticated"))),
        &options,
    );
    assert_eq!(
        rule(&t, "linkerd_default_cluster-authenticated").clauses,
        vec![Clause {
            matches: vec![
                not_principals(vec![presence()]),
                Match {
                    not_source_ips: vec![ip(&[10, 0, 0, 0], 16)],
                    ..Default::default()
                },
            ]
        }]
    );

    // The pod's annotation wins over its namespace's.
    let yaml = cluster(Some("deny")).replace(
        "name: db, namespace: shop,",
        "name: db, namespace: shop, annotations: {config.linkerd.io/default-inbound-policy: all-unauthenticated},",
    );
    let t = run_yaml(&yaml);
    assert!(references(&t, "db").is_empty());
    assert_eq!(references(&t, "web"), vec!["shop/linkerd_default_deny"]);
}

#[test]
fn access_policy_and_audit() {
    let t = run_yaml(
        &(cluster(None) + &server("web", "web", "8080", "  accessPolicy: all-authenticated\n")),
    );
    assert_eq!(
        rule(&t, "linkerd_server_web").clauses[1],
        Clause {
            matches: vec![not_principals(vec![presence()])]
        }
    );
    // audit: a dry run (logged, never refused), and a warning for the annotation.
    let t = run_yaml(
        &(cluster(Some("audit")) + &server("web", "web", "8080", "  accessPolicy: audit\n")),
    );
    for name in ["linkerd_server_web", "linkerd_default_audit_except_8080"] {
        assert!(authorization(&t, "shop", name).unwrap().dry_run, "{name}");
    }
    assert!(t.problems.iter().any(|p| p.kind == "Namespace"
        && p.is_warning()
        && p.field.contains("default-inbound-policy")));
    assert!(
        t.problems
            .iter()
            .any(|p| p.kind == "Server" && p.is_warning() && p.field == "spec.accessPolicy")
    );
}

#[test]
fn route_policies_are_reported_and_admit_nothing() {
    let yaml = cluster(None)
        + &server("web", "web", "8080", "")
        + &mesh_tls("friends", "{identities: [\"*\"]}")
        + "apiVersion: policy.linkerd.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: on-route, namespace: shop}\nspec:\n  targetRef: {group: policy.linkerd.io, kind: HTTPRoute, name: get}\n  requiredAuthenticationRefs: [{group: policy.linkerd.io, kind: MeshTLSAuthentication, name: friends}]\n---\n";
    let t = run_yaml(&yaml);
    assert_eq!(
        rule(&t, "linkerd_server_web").clauses,
        vec![port_only(8080)]
    );
    let p = t
        .problems
        .iter()
        .find(|p| p.name == "on-route")
        .expect("reported");
    assert_eq!(p.kind, "AuthorizationPolicy.policy.linkerd.io");
    // No route `get` is attached to a Server: the policy admits nobody (routes at a waypoint:
    // translate_linkerd_waypoint.rs).
    assert_eq!(p.field, "spec.targetRef.name");
    assert!(
        p.is_warning() && p.message.contains("admits no client"),
        "{p}"
    );
}

#[test]
fn invalid_objects_never_widen_access() {
    let base = cluster(None) + &server("web", "web", "8080", "");
    for (bad, kind, field) in [
        (
            network("office", "{networks: [{cidr: 10.0.0.0/33}]}") + &policy("p", "web", &[OFFICE]),
            "NetworkAuthentication",
            "spec.networks[0].cidr",
        ),
        (
            policy("p", "web", &[FRIENDS]),
            "AuthorizationPolicy.policy.linkerd.io",
            "spec.requiredAuthenticationRefs[0]",
        ),
        (
            policy(
                "p",
                "web",
                &["{group: policy.linkerd.io, kind: Frobnicator, name: x}"],
            ),
            "AuthorizationPolicy.policy.linkerd.io",
            "spec.requiredAuthenticationRefs[0].kind",
        ),
        (
            policy("p", "web", &[]).replace("kind: Server", "kind: Pod"),
            "AuthorizationPolicy.policy.linkerd.io",
            "spec.targetRef.kind",
        ),
        (
            // A misspelt field would authorize everybody if it were left out.
            policy("p", "web", &[])
                .replace("requiredAuthenticationRefs", "requiredAuthenticationRef"),
            "AuthorizationPolicy.policy.linkerd.io",
            "spec.requiredAuthenticationRef",
        ),
    ] {
        let t = run_yaml(&(base.clone() + &bad));
        assert!(
            t.problems
                .iter()
                .any(|p| p.kind == kind && p.field == field && !p.is_warning()),
            "{field}: {:?}",
            t.problems
        );
        assert_eq!(
            rule(&t, "linkerd_server_web").clauses,
            vec![port_only(8080)],
            "{field}: the port stays refused to all"
        );
    }
    // A Server that cannot be read in full refuses what it can: an unknown access policy is
    // deny, a port it cannot read is every port.
    let t =
        run_yaml(&(cluster(None) + &server("web", "web", "8080", "  accessPolicy: allow-all\n")));
    assert_eq!(
        rule(&t, "linkerd_server_web").clauses,
        vec![port_only(8080)]
    );
    let t = run_yaml(&(cluster(None) + &server("web", "web", "-1", "")));
    assert_eq!(rule(&t, "linkerd_server_web").clauses, Vec::new());
    assert!(errors(&t).iter().any(|p| p.field == "spec.port"));
    // An unknown default policy denies.
    let t = run_yaml(&cluster(Some("allow-everything")));
    assert_eq!(rule(&t, "linkerd_default_deny").clauses, Vec::new());
}

#[test]
fn a_bad_edit_keeps_the_last_good_version() {
    let good = cluster(None)
        + &server("web", "web", "8080", "")
        + &mesh_tls(
            "friends",
            r#"{identities: ["front.shop.serviceaccount.identity.linkerd.cluster.local"]}"#,
        )
        + &policy("web-friends", "web", &[FRIENDS]);
    let mut translator = Translator::new(TranslateOptions::default());
    let before = translator.translate(&index_from("l.yaml", &good));
    let bad = good
        .replace("front.shop.serviceaccount", "front shop")
        .replace("port: 8080", "port: {}");
    let after = translator.translate(&index_from("l.yaml", &bad));
    assert_eq!(
        rule(&after, "linkerd_server_web"),
        rule(&before, "linkerd_server_web"),
        "{:?}",
        after.problems
    );
    for kind in ["MeshTLSAuthentication", "Server"] {
        assert!(
            after
                .problems
                .iter()
                .any(|p| p.kind == kind && p.message.contains("keeping its last good version")),
            "{kind}: {:?}",
            after.problems
        );
    }
    // Deleting the policy (the Server stays) refuses its clients.
    let without = good.replace(&policy("web-friends", "web", &[FRIENDS]), "");
    let t = translator.translate(&index_from("l.yaml", &without));
    assert_eq!(
        rule(&t, "linkerd_server_web").clauses,
        vec![port_only(8080)]
    );
}

#[test]
fn istio_policies_on_the_same_workload_stay_in_force() {
    let yaml = cluster(None)
        + &server("web", "web", "8080", "")
        + "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  rules: [{from: [{source: {namespaces: [shop]}}]}]\n---\n";
    let t = run_yaml(&yaml);
    assert_eq!(
        references(&t, "web"),
        vec!["shop/linkerd_server_web", "shop/web"]
    );
    assert!(authorization(&t, "shop", "web").is_some());
}
