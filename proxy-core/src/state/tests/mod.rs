//! Tests of [`ProxyState`]: applying and removing resources, the indexes, endpoints,
//! change notification, the dump, and which policies apply to a workload.

mod workloads;

use std::collections::BTreeMap;

use api::security::{self as sec, Authorization, Clause, Rule, string_match::MatchType};
use api::workload::{self as wl, address};
use hbone::Identity;
use workloads::{WEB, ip, pod, uid, web_service};

use super::*;

#[test]
fn workloads_are_indexed_by_uid_address_and_node() {
    let state = ProxyState::new();
    state
        .apply_address(&uid("a"), pod("a", "node1", "10.0.0.1", &[]))
        .unwrap();
    state
        .apply_address(&uid("b"), pod("b", "node2", "fd00::2", &[]))
        .unwrap();
    assert_eq!(state.workload_by_uid(&uid("a")).unwrap().name, "a");
    assert_eq!(state.workload_by_ip(ip("10.0.0.1")).unwrap().name, "a");
    assert_eq!(state.workload_by_ip(ip("fd00::2")).unwrap().name, "b");
    // A v4-mapped address (as a dual-stack socket reports it) finds the v4 workload.
    assert_eq!(
        state.workload_by_ip(ip("::ffff:10.0.0.1")).unwrap().name,
        "a"
    );
    assert!(state.workload_by_ip(ip("10.0.0.9")).is_none());
    let on_node1: Vec<_> = state
        .workloads_on_node("node1")
        .iter()
        .map(|w| w.name.clone())
        .collect();
    assert_eq!(on_node1, ["a"]);

    // An update moves the workload: old address and node no longer find it.
    state
        .apply_address(&uid("a"), pod("a", "node2", "10.0.0.3", &[]))
        .unwrap();
    assert!(state.workload_by_ip(ip("10.0.0.1")).is_none());
    assert_eq!(state.workload_by_ip(ip("10.0.0.3")).unwrap().name, "a");
    assert!(state.workloads_on_node("node1").is_empty());
    assert_eq!(state.workloads_on_node("node2").len(), 2);

    state.remove_address(&uid("a"));
    assert!(state.workload_by_uid(&uid("a")).is_none());
    assert!(state.workload_by_ip(ip("10.0.0.3")).is_none());
    assert_eq!(state.workloads_on_node("node2").len(), 1);
}

#[test]
fn host_network_workloads_are_not_found_by_ip() {
    let state = ProxyState::new();
    let mut a = pod("a", "node1", "192.168.1.10", &[]);
    if let Some(address::Type::Workload(w)) = &mut a.r#type {
        w.network_mode = wl::NetworkMode::HostNetwork as i32;
    }
    state.apply_address(&uid("a"), a).unwrap();
    assert!(state.workload_by_uid(&uid("a")).is_some());
    assert!(state.workload_by_ip(ip("192.168.1.10")).is_none());
}

#[test]
fn services_are_indexed_by_vip_and_host() {
    let state = ProxyState::new();
    state
        .apply_address(WEB, web_service(&[(80, 8080)]))
        .unwrap();
    let svc = state.service_by_vip(ip("10.96.0.10")).unwrap();
    assert_eq!(svc.key(), WEB);
    assert_eq!(
        state
            .service_by_host("shop", "web.shop.svc.cluster.local")
            .unwrap()
            .vips,
        [ip("10.96.0.10")]
    );
    assert!(
        state
            .service_by_host("other", "web.shop.svc.cluster.local")
            .is_none()
    );
    state.remove_address(WEB);
    assert!(state.service_by_vip(ip("10.96.0.10")).is_none());
    assert!(
        state
            .service_by_host("shop", "web.shop.svc.cluster.local")
            .is_none()
    );
}

#[test]
fn endpoints_resolve_target_ports() {
    let state = ProxyState::new();
    // Port 80 → 8080 on the service; port 9090 is named (resolved per pod).
    state
        .apply_address(WEB, web_service(&[(80, 8080), (9090, 0)]))
        .unwrap();
    state
        .apply_address(
            &uid("a"),
            pod("a", "n", "10.0.0.1", &[(80, 8081), (9090, 9191)]),
        )
        .unwrap();
    // b's map lacks both ports: falls back to the service's 8080, and has nothing for 9090.
    state
        .apply_address(&uid("b"), pod("b", "n", "10.0.0.2", &[]))
        .unwrap();
    let mut unhealthy = pod("c", "n", "10.0.0.3", &[(80, 8080)]);
    if let Some(address::Type::Workload(w)) = &mut unhealthy.r#type {
        w.status = wl::WorkloadStatus::Unhealthy as i32;
    }
    state.apply_address(&uid("c"), unhealthy).unwrap();
    // Scheduled, network not set up yet: no address, so no endpoint even if marked healthy.
    let mut starting = pod("d", "n", "10.0.0.4", &[(80, 8080)]);
    if let Some(address::Type::Workload(w)) = &mut starting.r#type {
        w.addresses.clear();
    }
    state.apply_address(&uid("d"), starting).unwrap();
    assert!(state.workload_by_uid(&uid("d")).is_some());
    assert_eq!(state.workloads_on_node("n").len(), 4);
    let svc = state
        .service_by_host("shop", "web.shop.svc.cluster.local")
        .unwrap();
    let eps = |port| {
        state
            .endpoints(&svc, port)
            .into_iter()
            .map(|e| (e.workload.name.clone(), e.port))
            .collect::<Vec<_>>()
    };
    assert_eq!(eps(80), [("a".into(), 8081), ("b".into(), 8080)]);
    assert_eq!(eps(9090), [("a".to_string(), 9191)]);
    // A port the service does not declare has no endpoints.
    assert!(eps(443).is_empty());
    // Removing a workload removes its endpoint.
    state.remove_address(&uid("a"));
    assert_eq!(eps(80), [("b".to_string(), 8080)]);
}

#[test]
fn invalid_resources_change_nothing() {
    let state = ProxyState::new();
    state
        .apply_address(&uid("a"), pod("a", "n", "10.0.0.1", &[]))
        .unwrap();
    let before = *state.changes().borrow();
    let mut bad = pod("a", "n", "10.0.0.2", &[]);
    if let Some(address::Type::Workload(w)) = &mut bad.r#type {
        w.addresses = vec![vec![10, 0, 0]];
    }
    let err = state.apply_address(&uid("a"), bad).unwrap_err();
    assert!(err.contains("3 bytes"), "{err}");
    assert_eq!(state.workload_by_ip(ip("10.0.0.1")).unwrap().name, "a");
    assert!(state.workload_by_ip(ip("10.0.0.2")).is_none());
    assert_eq!(*state.changes().borrow(), before);
    let err = state
        .apply_authorization(
            "shop/p",
            Authorization {
                namespace: "shop".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err, "Authorization.name is empty");
    // Removing what is not there is not a change either.
    state.remove_address("nothing");
    state.remove_authorization("nothing");
    assert_eq!(*state.changes().borrow(), before);
}

#[test]
fn a_resource_name_may_change_kind() {
    let state = ProxyState::new();
    state
        .apply_address("x", pod("a", "n", "10.0.0.1", &[]))
        .unwrap();
    state.apply_address("x", web_service(&[])).unwrap();
    assert!(state.workload_by_uid(&uid("a")).is_none());
    assert!(state.workload_by_ip(ip("10.0.0.1")).is_none());
    assert!(state.service_by_vip(ip("10.96.0.10")).is_some());
    state.remove_address("x");
    assert!(state.service_by_vip(ip("10.96.0.10")).is_none());
}

#[tokio::test]
async fn changes_and_sync_are_signalled() {
    let state = ProxyState::new();
    let mut changes = state.changes();
    assert!(!state.is_synced());
    state
        .apply_address(&uid("a"), pod("a", "n", "10.0.0.1", &[]))
        .unwrap();
    changes.changed().await.unwrap();
    state.mark_synced();
    changes.changed().await.unwrap();
    assert!(state.is_synced());
    state.remove_address(&uid("a"));
    changes.changed().await.unwrap();
    assert_eq!(*changes.borrow_and_update(), 3);
}

#[test]
fn a_second_name_for_a_resource_replaces_the_first() {
    let state = ProxyState::new();
    state
        .apply_address("old", pod("a", "n", "10.0.0.1", &[]))
        .unwrap();
    state
        .apply_address("new", pod("a", "n", "10.0.0.2", &[]))
        .unwrap();
    assert!(state.workload_by_ip(ip("10.0.0.1")).is_none());
    assert_eq!(state.workload_by_ip(ip("10.0.0.2")).unwrap().name, "a");
    // The first name no longer carries anything: removing it keeps the workload.
    state.remove_address("old");
    assert!(state.workload_by_uid(&uid("a")).is_some());
    state.remove_address("new");
    assert!(state.workload_by_uid(&uid("a")).is_none());

    let workload = {
        state
            .apply_address(&uid("a"), pod("a", "n", "10.0.0.1", &[]))
            .unwrap();
        state.workload_by_uid(&uid("a")).unwrap()
    };
    let plaintext = || {
        state.authorize(&AuthzRequest {
            source_identity: None,
            source_ip: ip("10.0.0.9"),
            destination: &workload,
            destination_port: 80,
        })
    };
    let deny = authz("ns", "shop", sec::Scope::Namespace, sec::Action::Deny);
    state.apply_authorization("old", deny.clone()).unwrap();
    state.apply_authorization("new", deny).unwrap();
    state.remove_authorization("old");
    assert_eq!(plaintext(), Decision::Deny("denied by shop/ns".into()));
    state.remove_authorization("new");
    assert_eq!(plaintext(), Decision::Allow);
}

#[test]
fn authorization_changes_are_signalled_only_when_decisions_may_change() {
    let state = ProxyState::new();
    let authz_changes = state.authz_changes();
    let signalled = |before: &mut u64| {
        let now = *authz_changes.borrow();
        std::mem::replace(before, now) != now
    };
    let mut seen = *authz_changes.borrow();
    let with_policies = |addr: &str, policies: &[&str]| {
        let mut a = pod("a", "n", addr, &[(80, 8080)]);
        if let Some(address::Type::Workload(w)) = &mut a.r#type {
            w.authorization_policies = policies.iter().map(|p| p.to_string()).collect();
        }
        a
    };

    // New workloads, services and changes nobody's decision reads: not signalled.
    state
        .apply_address(&uid("a"), with_policies("10.0.0.1", &[]))
        .unwrap();
    state
        .apply_address(&uid("b"), pod("b", "n", "10.0.0.2", &[]))
        .unwrap();
    state
        .apply_address(WEB, web_service(&[(80, 8080)]))
        .unwrap();
    let mut unhealthy = with_policies("10.0.0.1", &[]);
    if let Some(address::Type::Workload(w)) = &mut unhealthy.r#type {
        w.status = wl::WorkloadStatus::Unhealthy as i32;
    }
    state.apply_address(&uid("a"), unhealthy).unwrap();
    state.remove_address(&uid("b"));
    state.mark_synced();
    assert!(!signalled(&mut seen));

    // A workload's selector policies or addresses: signalled.
    state
        .apply_address(&uid("a"), with_policies("10.0.0.1", &["shop/p"]))
        .unwrap();
    assert!(signalled(&mut seen));
    state
        .apply_address(&uid("a"), with_policies("10.0.0.3", &["shop/p"]))
        .unwrap();
    assert!(signalled(&mut seen));

    // Policies: signalled when added, replaced or removed, not when unknown.
    let deny = authz("p", "shop", sec::Scope::WorkloadSelector, sec::Action::Deny);
    state.apply_authorization("shop/p", deny.clone()).unwrap();
    assert!(signalled(&mut seen));
    state.apply_authorization("shop/p", deny).unwrap();
    assert!(signalled(&mut seen));
    state.remove_authorization("shop/p");
    assert!(signalled(&mut seen));
    state.remove_authorization("shop/p");
    assert!(!signalled(&mut seen));
}

fn authz(name: &str, ns: &str, scope: sec::Scope, action: sec::Action) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: ns.into(),
        scope: scope as i32,
        action: action as i32,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![sec::Match {
                    not_principals: vec![sec::StringMatch {
                        match_type: Some(MatchType::Presence(())),
                    }],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: false,
    }
}

/// Which policies apply: GLOBAL always, NAMESPACE in its namespace, WORKLOAD_SELECTOR when the
/// workload names it. Each is a DENY of plaintext, so a plaintext connection reveals which.
#[test]
fn policies_apply_by_scope() {
    let state = ProxyState::new();
    let mut a = pod("a", "n", "10.0.0.1", &[]);
    if let Some(address::Type::Workload(w)) = &mut a.r#type {
        w.authorization_policies = vec!["shop/selected".into(), "shop/not-yet-known".into()];
    }
    state.apply_address(&uid("a"), a).unwrap();
    let workload = state.workload_by_uid(&uid("a")).unwrap();
    let web: Identity = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
    let decide = |identity: Option<&Identity>| {
        state.authorize(&AuthzRequest {
            source_identity: identity,
            source_ip: ip("10.0.0.9"),
            destination: &workload,
            destination_port: 80,
        })
    };
    let denied_by = |name: &str| Decision::Deny(format!("denied by {name}"));
    let cases = [
        (
            authz("other-ns", "ops", sec::Scope::Namespace, sec::Action::Deny),
            false,
        ),
        (
            authz(
                "unselected",
                "shop",
                sec::Scope::WorkloadSelector,
                sec::Action::Deny,
            ),
            false,
        ),
        (
            authz(
                "global",
                "istio-system",
                sec::Scope::Global,
                sec::Action::Deny,
            ),
            true,
        ),
        (
            authz("ns", "shop", sec::Scope::Namespace, sec::Action::Deny),
            true,
        ),
        (
            authz(
                "selected",
                "shop",
                sec::Scope::WorkloadSelector,
                sec::Action::Deny,
            ),
            true,
        ),
    ];
    for (policy, applies) in cases {
        let key = format!("{}/{}", policy.namespace, policy.name);
        state.apply_authorization(&key, policy).unwrap();
        let expected = if applies {
            denied_by(&key)
        } else {
            Decision::Allow
        };
        assert_eq!(decide(None), expected, "{key}");
        assert_eq!(decide(Some(&web)), Decision::Allow, "{key}");
        state.remove_authorization(&key);
        assert_eq!(decide(None), Decision::Allow, "{key} removed");
    }
}

#[test]
fn config_dump_lists_everything() {
    let state = ProxyState::new();
    state
        .apply_address(WEB, web_service(&[(80, 8080)]))
        .unwrap();
    state
        .apply_address(&uid("a"), pod("a", "n", "10.0.0.1", &[(80, 8080)]))
        .unwrap();
    state
        .apply_authorization(
            "shop/ns",
            authz("ns", "shop", sec::Scope::Namespace, sec::Action::Deny),
        )
        .unwrap();
    let dump = state.config_dump();
    assert_eq!(dump["synced"], false);
    assert_eq!(dump["workloads"][0]["uid"], uid("a"));
    assert_eq!(dump["workloads"][0]["addresses"][0], "10.0.0.1");
    assert_eq!(
        dump["services"][0]["hostname"],
        "web.shop.svc.cluster.local"
    );
    assert_eq!(dump["policies"][0]["name"], "ns");
    assert_eq!(dump["policies"][0]["action"], "Deny");
    assert_eq!(
        dump["workloads"][0]["services"][WEB],
        serde_json::to_value(BTreeMap::from([(80u16, 8080u16)])).unwrap()
    );
}

#[test]
fn workload_identity_defaults() {
    let mut w = Workload {
        namespace: "shop".into(),
        ..Default::default()
    };
    assert_eq!(
        w.identity().to_string(),
        "spiffe://cluster.local/ns/shop/sa/default"
    );
    w.trust_domain = "example.org".into();
    w.service_account = "web".into();
    assert_eq!(
        w.identity().to_string(),
        "spiffe://example.org/ns/shop/sa/web"
    );
    // An identity that cannot be formed gets the placeholder, which no pod can have.
    w.namespace = "Bad_Namespace".into();
    assert!(w.try_identity().is_err());
    assert_eq!(
        w.identity().to_string(),
        "spiffe://cluster.local/ns/invalid.workload/sa/invalid.workload"
    );
}
