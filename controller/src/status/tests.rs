//! Tests of the desired statuses and their writer.

use super::*;

const NOW: &str = "2025-01-02T03:04:05Z";
const LATER: &str = "2025-01-02T09:00:00Z";

fn kind(name: &str) -> &'static WatchedKind {
    WatchedKind::by_kind(name).unwrap()
}

fn observed(kind_name: &str, status: Value, parent_refs: Vec<Value>) -> (ObjectKey, Observed) {
    (
        ObjectKey::new(kind_name, "shop", "obj"),
        Observed {
            kind: kind(kind_name),
            generation: 3,
            resource_version: "42".into(),
            uid: "u-1".into(),
            status,
            parent_refs,
            targeted: false,
        },
    )
}

fn problem(kind_name: &str, message: &str) -> Problem {
    Problem::new(
        &format!("kubernetes:{kind_name}/shop/obj"),
        kind_name,
        "shop",
        "obj",
    )
    .field("spec.rules[0]")
    .message(message)
}

fn service_ref() -> Value {
    json!({"group": "", "kind": "Service", "name": "reviews"})
}

/// Applies updates to the observed map, as the API server and the watch would.
fn apply(map: &mut ObservedMap, updates: &[StatusUpdate]) {
    for u in updates {
        let obs = map.get_mut(&u.key).unwrap();
        let mut status = obs.status.as_object().cloned().unwrap_or_default();
        for (k, v) in u.status.as_object().unwrap() {
            status.insert(k.clone(), v.clone());
        }
        obs.status = Value::Object(status);
    }
}

#[test]
fn route_problem_becomes_accepted_false_and_clears() {
    let gateway_ref =
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ingress"});
    let other = json!({"parentRef": gateway_ref, "controllerName": "example.com/ingress", "conditions": []});
    let mut map: ObservedMap = [observed(
        "HTTPRoute",
        json!({"parents": [other.clone()]}),
        vec![gateway_ref.clone(), service_ref()],
    )]
    .into();
    let bad = [problem("HTTPRoute", "unknown filter type \"Foo\"")];
    let updates = desired_statuses(&bad, &map, NOW);
    assert_eq!(updates.len(), 1);
    let parents = updates[0].status["parents"].as_array().unwrap();
    // The other controller's entry stays first and untouched.
    assert_eq!(parents[0], other);
    assert_eq!(parents[1]["parentRef"], service_ref());
    assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
    let c = &parents[1]["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str()),
        (Some("Accepted"), Some("False"))
    );
    assert_eq!(c["reason"], "UnsupportedValue");
    assert_eq!(c["message"], "spec.rules[0]: unknown filter type \"Foo\"");
    assert_eq!(c["observedGeneration"], 3);
    assert_eq!(c["lastTransitionTime"], NOW);
    apply(&mut map, &updates);

    // Same problems: nothing to write (no loops).
    assert!(desired_statuses(&bad, &map, LATER).is_empty());

    // Fixed: Accepted=True, stamped with the new transition time.
    let updates = desired_statuses(&[], &map, LATER);
    let c = &updates[0].status["parents"][1]["conditions"][0];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("Accepted"))
    );
    assert_eq!(c["lastTransitionTime"], LATER);
    apply(&mut map, &updates);
    assert!(desired_statuses(&[], &map, "2030-01-01T00:00:00Z").is_empty());
}

#[test]
fn route_warnings_keep_it_accepted_and_other_origins_are_ignored() {
    let map: ObservedMap = [observed("GRPCRoute", Value::Null, vec![service_ref()])].into();
    let mut from_file = problem("GRPCRoute", "broken");
    from_file.origin = "/etc/config/routes.yaml".into();
    let warn = problem(
        "GRPCRoute",
        "warning: Service x is not served by a waypoint",
    );
    let updates = desired_statuses(&[from_file, warn], &map, NOW);
    let c = &updates[0].status["parents"][0]["conditions"][0];
    assert_eq!(c["status"], "True");
    assert_eq!(
        c["message"],
        "spec.rules[0]: Service x is not served by a waypoint"
    );
}

#[test]
fn unresolved_backends_and_missing_parents_have_gateway_api_reasons() {
    let map: ObservedMap = [observed("TCPRoute", Value::Null, vec![service_ref()])].into();
    let conditions = |problems: &[Problem]| {
        let updates = desired_statuses(problems, &map, NOW);
        let c = updates[0].status["parents"][0]["conditions"].clone();
        let pick = |i: usize| {
            let f = |k: &str| c[i][k].as_str().unwrap_or_default().to_string();
            (f("type"), f("status"), f("reason"), f("message"))
        };
        (pick(0), pick(1))
    };
    let missing = problem("TCPRoute", "warning: no Service shop/v3; refused")
        .field("spec.rules[0].backendRefs[1].name");
    let (accepted, resolved) = conditions(&[missing]);
    assert_eq!(
        (accepted.1.as_str(), accepted.2.as_str()),
        ("True", "Accepted")
    );
    assert_eq!(
        resolved,
        (
            "ResolvedRefs".into(),
            "False".into(),
            "BackendNotFound".into(),
            "spec.rules[0].backendRefs[1].name: no Service shop/v3; refused".into()
        )
    );
    let (accepted, resolved) = conditions(&[]);
    assert_eq!(accepted.2, "Accepted");
    assert_eq!(
        (resolved.1.as_str(), resolved.2.as_str()),
        ("True", "ResolvedRefs")
    );
    let parent = problem("TCPRoute", "no Service shop/nope").field("spec.parentRefs[0].name");
    let kind = problem("TCPRoute", "warning: backend kind \"Pod\" is not supported")
        .field("spec.rules[0].backendRefs[0].kind");
    let (accepted, resolved) = conditions(&[parent, kind]);
    assert_eq!(
        (accepted.1.as_str(), accepted.2.as_str()),
        ("False", "NoMatchingParent")
    );
    assert_eq!(
        (resolved.1.as_str(), resolved.2.as_str()),
        ("False", "InvalidKind")
    );
}

#[test]
fn a_route_losing_its_port_to_a_higher_route_type_is_conflicted() {
    let map: ObservedMap = [observed("TCPRoute", Value::Null, vec![service_ref()])].into();
    // As the translation words it when an HTTPRoute routes the same Service port.
    let lost = problem(
        "TCPRoute",
        &format!(
            "warning: port 9000 of Service shop/db is also routed by HTTPRoute shop/web, \
             which {ROUTE_TYPE_CONFLICT}; this route is not used there"
        ),
    )
    .field("spec.parentRefs");
    let updates = desired_statuses(&[lost], &map, NOW);
    let c = &updates[0].status["parents"][0]["conditions"][0];
    assert_eq!(
        (
            c["type"].as_str(),
            c["status"].as_str(),
            c["reason"].as_str()
        ),
        (Some("Accepted"), Some("False"), Some("Conflicted"))
    );
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("HTTPRoute shop/web")
    );
    // An error of its own still says what is wrong with it.
    let bad = problem("TCPRoute", "no Service shop/nope").field("spec.parentRefs[0].name");
    let lost_too = problem("TCPRoute", &format!("warning: x {ROUTE_TYPE_CONFLICT}"));
    let updates = desired_statuses(&[bad, lost_too], &map, NOW);
    let c = &updates[0].status["parents"][0]["conditions"][0];
    assert_eq!(c["reason"], "NoMatchingParent");
}

#[test]
fn route_without_mesh_parents_gets_nothing() {
    let gateway_ref = json!({"name": "ingress"});
    let map: ObservedMap = [observed("HTTPRoute", Value::Null, vec![gateway_ref])].into();
    assert!(desired_statuses(&[problem("HTTPRoute", "bad")], &map, NOW).is_empty());
}

#[test]
fn authorization_policy_conditions_follow_istio() {
    let foreign = json!({"type": "Reconciled", "status": "True"});
    let mut map: ObservedMap = [observed(
        "AuthorizationPolicy",
        json!({"conditions": [foreign.clone()]}),
        vec![],
    )]
    .into();
    // Valid: attached to ztunnel.
    let updates = desired_statuses(&[], &map, NOW);
    let conditions = updates[0].status["conditions"].as_array().unwrap();
    assert_eq!(conditions[0], foreign);
    assert_eq!(conditions[1]["type"], ZTUNNEL_ACCEPTED);
    assert_eq!(conditions[1]["reason"], "Accepted");
    assert_eq!(conditions[1]["message"], "attached to ztunnel");
    assert_eq!(conditions[1]["observedGeneration"], "3");
    apply(&mut map, &updates);
    assert!(desired_statuses(&[], &map, LATER).is_empty());

    // HTTP attributes dropped: still accepted, with Istio's reason.
    let warn = problem(
        "AuthorizationPolicy",
        "warning: ztunnel does not support HTTP attributes",
    );
    let updates = desired_statuses(std::slice::from_ref(&warn), &map, LATER);
    let c = &updates[0].status["conditions"][1];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("UnsupportedValue"))
    );
    assert_eq!(c["lastTransitionTime"], NOW, "status unchanged, time kept");

    // Refused.
    let bad = problem("AuthorizationPolicy", "unknown action \"LOG\"");
    let updates = desired_statuses(&[bad, warn], &map, LATER);
    let c = &updates[0].status["conditions"][1];
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Invalid"))
    );
    assert_eq!(c["lastTransitionTime"], LATER);
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.rules[0]: unknown action")
    );

    // Bound to a waypoint instead: the condition changes type.
    map.values_mut().for_each(|o| o.targeted = true);
    let updates = desired_statuses(&[], &map, LATER);
    let conditions = updates[0].status["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2);
    assert_eq!(conditions[1]["type"], WAYPOINT_ACCEPTED);
}

#[test]
fn other_istio_kinds_show_a_condition_only_while_broken() {
    let mut map: ObservedMap = [observed("DestinationRule", Value::Null, vec![])].into();
    assert!(desired_statuses(&[], &map, NOW).is_empty());
    let updates = desired_statuses(&[problem("DestinationRule", "bad subset")], &map, NOW);
    assert_eq!(
        updates[0].status["conditions"][0]["type"],
        WAYPOINT_ACCEPTED
    );
    assert_eq!(updates[0].resource_version, "42");
    apply(&mut map, &updates);
    let updates = desired_statuses(&[], &map, LATER);
    assert_eq!(updates[0].status, json!({"conditions": []}));
    apply(&mut map, &updates);
    assert!(desired_statuses(&[], &map, LATER).is_empty());
}

#[test]
fn kinds_without_status_and_long_messages() {
    let map: ObservedMap = [observed("TrafficSplit", Value::Null, vec![])].into();
    assert!(desired_statuses(&[problem("TrafficSplit", "bad")], &map, NOW).is_empty());
    let long = join(&["é".repeat(MAX_MESSAGE)]);
    assert!(long.len() <= MAX_MESSAGE && long.ends_with("..."));
    assert_eq!(now_rfc3339().len(), NOW.len());
}
