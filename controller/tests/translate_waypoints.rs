//! Waypoints, from `fixtures/waypoints.yaml`.

#[path = "translate_common.rs"]
mod common;

use api::workload::{GatewayAddress, NamespacedHostname, gateway_address::Destination};
use common::*;

fn waypoint(ns: &str, name: &str) -> Option<GatewayAddress> {
    Some(GatewayAddress {
        destination: Some(Destination::Hostname(NamespacedHostname {
            namespace: ns.to_string(),
            hostname: format!("{name}.{ns}.svc.cluster.local"),
        })),
        hbone_mtls_port: 15008,
    })
}

#[test]
fn namespace_label_gives_services_their_waypoint() {
    let t = run(&["waypoints.yaml"]);
    assert_eq!(
        service(&t, "shop", "cart").unwrap().waypoint,
        waypoint("shop", "shop-waypoint")
    );
    // A service waypoint is not a workload waypoint.
    assert_eq!(workload(&t, "shop", "cart-1").unwrap().waypoint, None);
}

#[test]
fn object_label_wins_and_none_opts_out() {
    let t = run(&["waypoints.yaml"]);
    assert_eq!(service(&t, "shop", "health").unwrap().waypoint, None);
    // pods-waypoint is for workloads: the labelled service gets nothing,
    // the labelled pod gets it.
    assert_eq!(service(&t, "shop", "direct").unwrap().waypoint, None);
    assert_eq!(
        workload(&t, "shop", "direct-1").unwrap().waypoint,
        waypoint("shop", "pods-waypoint")
    );
}

#[test]
fn cross_namespace_waypoint_for_all() {
    let t = run(&["waypoints.yaml"]);
    assert_eq!(
        service(&t, "shop", "checkout").unwrap().waypoint,
        waypoint("infra", "shared")
    );
    assert_eq!(
        workload(&t, "shop", "checkout-1").unwrap().waypoint,
        waypoint("infra", "shared")
    );
}

#[test]
fn waypoint_never_uses_a_waypoint() {
    let t = run(&["waypoints.yaml"]);
    assert_eq!(service(&t, "shop", "shop-waypoint").unwrap().waypoint, None);
    assert_eq!(
        workload(&t, "shop", "shop-waypoint-5c6d7-abcde")
            .unwrap()
            .waypoint,
        None
    );
}

#[test]
fn missing_waypoint_is_reported_once() {
    let t = run(&["waypoints.yaml"]);
    assert_eq!(service(&t, "lost", "orphan").unwrap().waypoint, None);
    let problems = problems_about(&t, "Namespace", "lost");
    assert_eq!(problems.len(), 1, "{:?}", t.problems);
    assert_eq!(problems[0].field, "metadata.labels[istio.io/use-waypoint]");
    assert!(
        problems[0].message.contains("lost/nowhere"),
        "{}",
        problems[0]
    );
    assert!(
        problems[0]
            .to_string()
            .starts_with("fixtures/waypoints.yaml: Namespace lost: field metadata.labels")
    );
}

#[test]
fn non_waypoint_gateways_are_ignored() {
    let t = run(&["waypoints.yaml"]);
    assert!(problems_about(&t, "Gateway", "ingress").is_empty());
    assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
}
