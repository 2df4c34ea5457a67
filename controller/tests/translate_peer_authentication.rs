//! PeerAuthentication, from `fixtures/peer-authentication.yaml`.

#[path = "translate_common.rs"]
mod common;

use api::security::{Action, Clause, Match, Rule, Scope, StringMatch, string_match::MatchType};
use common::*;
use test_support::manifests::{namespace, running_pod};

const STRICT: &str = "istio-system/istio_converted_static_strict";

fn no_principal() -> Match {
    Match {
        not_principals: vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        ..Default::default()
    }
}

fn refs(t: &controller::translate::Translation, ns: &str, pod: &str) -> Vec<String> {
    workload(t, ns, pod).expect(pod).authorization_policies
}

#[test]
fn static_strict_policy() {
    let t = run(&["peer-authentication.yaml"]);
    let a = authorization(&t, "istio-system", "istio_converted_static_strict").unwrap();
    assert_eq!(a.scope, Scope::WorkloadSelector as i32);
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!(
        a.rules,
        vec![Rule {
            clauses: vec![Clause {
                matches: vec![no_principal()]
            }]
        }]
    );
}

#[test]
fn precedence_workload_over_namespace_over_mesh() {
    let t = run(&["peer-authentication.yaml"]);
    assert_eq!(refs(&t, "strict-ns", "app-1"), vec![STRICT], "mesh STRICT");
    assert_eq!(refs(&t, "other", "other-1"), vec![STRICT], "mesh STRICT");
    assert!(
        refs(&t, "relaxed", "web-1").is_empty(),
        "namespace PERMISSIVE wins"
    );
    assert_eq!(
        refs(&t, "relaxed", "payments-1"),
        vec![STRICT],
        "workload STRICT wins"
    );
}

#[test]
fn port_exception_under_strict() {
    let t = run(&["peer-authentication.yaml"]);
    let name = "istio_converted_peer_authentication_scrape";
    assert_eq!(
        refs(&t, "strict-ns", "exporter-1"),
        vec![format!("strict-ns/{name}")],
        "the converted policy replaces the static one"
    );
    let a = authorization(&t, "strict-ns", name).unwrap();
    assert_eq!(a.action, Action::Deny as i32);
    assert_eq!(
        a.rules,
        vec![Rule {
            clauses: vec![
                Clause {
                    matches: vec![Match {
                        not_destination_ports: vec![9100],
                        ..Default::default()
                    }]
                },
                Clause {
                    matches: vec![no_principal()]
                },
            ]
        }]
    );
}

#[test]
fn strict_port_under_permissive() {
    let t = run(&["peer-authentication.yaml"]);
    let name = "istio_converted_peer_authentication_admin-port";
    assert_eq!(
        refs(&t, "relaxed", "admin-1"),
        vec![format!("relaxed/{name}")]
    );
    let a = authorization(&t, "relaxed", name).unwrap();
    let mut m = no_principal();
    m.destination_ports = vec![8443];
    assert_eq!(
        a.rules,
        vec![Rule {
            clauses: vec![Clause { matches: vec![m] }]
        }]
    );
}

#[test]
fn unknown_mode_is_reported() {
    let t = run(&["peer-authentication.yaml"]);
    let p = problems_about(&t, "PeerAuthentication", "typo");
    assert_eq!(p.len(), 1, "{:?}", t.problems);
    assert_eq!(p[0].field, "spec.mtls.mode");
    assert!(p[0].message.contains("STRICTEST"));
    assert!(
        p[0].message
            .ends_with("enforced as STRICT until it is fixed")
    );
}

#[test]
fn a_peer_authentication_that_cannot_be_understood_is_enforced_as_strict() {
    // No mesh policy: without the broken ones the pods would accept plaintext.
    let yaml = |mtls: &str| {
        namespace("loose", true)
            + &format!(
                r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: broken, namespace: loose}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  mtls: {mtls}
---
"#
            )
            + &running_pod("loose", "db-1", &[("app", "db")], "n1", "10.244.1.50")
            + &running_pod("loose", "web-1", &[("app", "web")], "n1", "10.244.1.51")
    };
    for (mtls, field) in [
        // An unknown mode, and a value of the wrong type.
        ("{mode: STRICTT}", "spec.mtls.mode"),
        ("STRICT", "spec.mtls"),
    ] {
        let t = controller::translate::translate(
            &index_from("pa.yaml", &yaml(mtls)),
            &Default::default(),
        );
        let p = problems_about(&t, "PeerAuthentication", "broken");
        assert_eq!(p.len(), 1, "{mtls}: {:?}", t.problems);
        assert_eq!(p[0].field, field, "{mtls}");
        assert_eq!(refs(&t, "loose", "db-1"), vec![STRICT], "{mtls}");
        assert!(
            refs(&t, "loose", "web-1").is_empty(),
            "{mtls}: not selected"
        );
    }
}

#[test]
fn no_peer_authentication_no_policy() {
    let t = run(&["enrollment.yaml"]);
    assert_eq!(count(&t, api::AUTHORIZATION_TYPE_URL), 0);
}
