//! L7 authorization through the engine, gRPC answers, and metric labels.

use api::waypoint::{self as pb, AuthorizationAction, PolicyScope};

use super::cfg::*;
use crate::engine::telemetry::count_of;
use crate::engine::{Caller, EndpointInfo, Target};

fn orders_policy() -> pb::AuthorizationPolicy {
    pb::AuthorizationPolicy {
        name: "orders-post".into(),
        namespace: "shop".into(),
        action: AuthorizationAction::Allow as i32,
        scope: PolicyScope::Services as i32,
        services: vec![HOST.into()],
        rules: vec![
            pb::AuthorizationRule {
                from: vec![pb::Source {
                    principals: vec![exact("cluster.local/ns/shop/sa/api-gateway")],
                    ..Default::default()
                }],
                to: vec![pb::Operation {
                    methods: vec![exact("POST")],
                    ..Default::default()
                }],
                when: vec![],
            },
            pb::AuthorizationRule {
                to: vec![pb::Operation {
                    methods: vec![exact("GET")],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn served(policies: Vec<pb::AuthorizationPolicy>) -> std::sync::Arc<crate::engine::Engine> {
    engine(&waypoint(
        vec![reviews(vec![route("r", vec![], forward(&[("v1", 1)]))])],
        vec![reviews_policy(None)],
        policies,
    ))
}

#[tokio::test]
async fn only_the_gateway_may_post() {
    let e = served(vec![orders_policy()]);
    let f = fake();
    let a = send(
        &e,
        &f,
        caller("api-gateway"),
        request("POST", "/orders", &[], "{}"),
    )
    .await;
    assert_eq!(a.status, 200);
    for sa in ["web", "default"] {
        let a = send(&e, &f, caller(sa), request("POST", "/orders", &[], "{}")).await;
        assert_eq!(a.status, 403);
        assert_eq!(a.body, "RBAC: access denied");
    }
    let anonymous = Caller {
        identity: None,
        ip: "10.0.9.9".parse().unwrap(),
    };
    let a = send(&e, &f, anonymous, request("POST", "/orders", &[], "{}")).await;
    assert_eq!(a.status, 403);
    assert_eq!(get(&e, &f, "/orders", &[]).await.status, 200);
    assert_eq!(f.calls().len(), 2);
    let text = e.runtime.render_metrics();
    assert_eq!(count_of(&text, &[("response_code", "403")]), 3);
    assert_eq!(
        count_of(
            &text,
            &[
                ("response_code", "200"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/shop/sa/api-gateway"
                ),
                ("destination_service", HOST),
                ("destination_service_name", "reviews"),
                ("destination_workload_namespace", "shop"),
                ("request_protocol", "http"),
                ("connection_security_policy", "mutual_tls"),
                ("reporter", "waypoint"),
            ]
        ),
        1
    );
}

#[tokio::test]
async fn deny_all_and_deny_with_not_forms() {
    let deny_all = pb::AuthorizationPolicy {
        name: "deny-all".into(),
        namespace: "shop".into(),
        action: AuthorizationAction::Allow as i32,
        scope: PolicyScope::Waypoint as i32,
        ..Default::default()
    };
    let e = served(vec![deny_all]);
    let f = fake();
    assert_eq!(get(&e, &f, "/", &[]).await.status, 403);
    assert_eq!(
        send(&e, &f, caller("api-gateway"), request("POST", "/", &[], ""))
            .await
            .status,
        403
    );
    assert!(f.calls().is_empty());

    let deny_outside = pb::AuthorizationPolicy {
        name: "admin-from-ops-only".into(),
        namespace: "shop".into(),
        action: AuthorizationAction::Deny as i32,
        scope: PolicyScope::Waypoint as i32,
        rules: vec![pb::AuthorizationRule {
            from: vec![pb::Source {
                not_principals: vec![exact("cluster.local/ns/shop/sa/ops")],
                ..Default::default()
            }],
            to: vec![pb::Operation {
                paths: vec![pb::StringMatch {
                    kind: Some(pb::string_match::Kind::Prefix("/admin/".into())),
                    ignore_case: false,
                }],
                ..Default::default()
            }],
            when: vec![],
        }],
        ..Default::default()
    };
    let e = served(vec![deny_outside]);
    assert_eq!(get(&e, &f, "/admin/users", &[]).await.status, 403);
    assert_eq!(get(&e, &f, "/public", &[]).await.status, 200);
    let ops = send(
        &e,
        &f,
        caller("ops"),
        request("GET", "/admin/users", &[], ""),
    )
    .await;
    assert_eq!(ops.status, 200);
}

#[tokio::test]
async fn workload_scoped_policies_apply_to_the_chosen_endpoint() {
    let only_gateway_to_v2 = pb::AuthorizationPolicy {
        name: "v2-locked".into(),
        namespace: "shop".into(),
        action: AuthorizationAction::Allow as i32,
        scope: PolicyScope::Workloads as i32,
        workloads: Some(pb::WorkloadSelector {
            namespace: "shop".into(),
            workload_uids: vec![V2.into()],
            ..Default::default()
        }),
        rules: vec![pb::AuthorizationRule {
            from: vec![pb::Source {
                principals: vec![exact("cluster.local/ns/shop/sa/api-gateway")],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = engine(&waypoint(
        vec![reviews(vec![
            route(
                "beta",
                vec![header_is("x-beta-user", "true")],
                forward(&[("v2", 1)]),
            ),
            route("rest", vec![], forward(&[("v1", 1)])),
        ])],
        vec![reviews_policy(None)],
        vec![only_gateway_to_v2],
    ));
    let f = fake();
    assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    assert_eq!(
        get(&e, &f, "/", &[("x-beta-user", "true")]).await.status,
        403
    );
    let gw = send(
        &e,
        &f,
        caller("api-gateway"),
        request("GET", "/", &[("x-beta-user", "true")], ""),
    )
    .await;
    assert_eq!(gw.status, 200);

    // The same decision for connections passed through at L4.
    let target = Target {
        address: std::net::SocketAddr::new(VIP.parse().unwrap(), PORT),
    };
    let v2 = EndpointInfo {
        uid: V2.into(),
        address: V2_ADDR.parse().unwrap(),
    };
    assert!(e.authorize_connection(&caller("web"), &target));
    assert!(!e.authorize_connection_to(&caller("web"), &target, &v2));
    assert!(e.authorize_connection_to(&caller("api-gateway"), &target, &v2));
}

#[tokio::test]
async fn grpc_requests_get_grpc_answers() {
    let e = served(vec![pb::AuthorizationPolicy {
        name: "deny-all".into(),
        namespace: "shop".into(),
        action: AuthorizationAction::Allow as i32,
        scope: PolicyScope::Waypoint as i32,
        ..Default::default()
    }]);
    let f = fake();
    let a = send(
        &e,
        &f,
        caller("web"),
        request(
            "POST",
            "/shop.Reviews/Get",
            &[("content-type", "application/grpc")],
            "",
        ),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["grpc-status"], "7");
    let text = e.runtime.render_metrics();
    assert_eq!(
        count_of(
            &text,
            &[("request_protocol", "grpc"), ("grpc_response_status", "7")]
        ),
        1
    );
}
