use super::*;
use api::waypoint::string_match::Kind;

fn exact(s: &str) -> pb::StringMatch {
    pb::StringMatch {
        kind: Some(Kind::Exact(s.into())),
        ignore_case: false,
    }
}

fn prefix(s: &str) -> pb::StringMatch {
    pb::StringMatch {
        kind: Some(Kind::Prefix(s.into())),
        ignore_case: false,
    }
}

fn policy(
    name: &str,
    action: AuthorizationAction,
    rules: Vec<pb::AuthorizationRule>,
) -> pb::AuthorizationPolicy {
    pb::AuthorizationPolicy {
        name: name.into(),
        namespace: "shop".into(),
        action: action as i32,
        scope: PolicyScope::Waypoint as i32,
        rules,
        ..Default::default()
    }
}

fn input<'a>(
    principal: Option<&'a str>,
    method: &'a str,
    path: &'a str,
    headers: &'a HeaderMap,
) -> Input<'a> {
    Input {
        principal,
        namespace: principal.and_then(|p| p.split('/').nth(2)),
        source_ip: "10.0.0.5".parse().unwrap(),
        remote_ip: "10.0.0.5".parse().unwrap(),
        destination_ip: "10.96.0.10".parse().unwrap(),
        destination_port: 80,
        http: Some(HttpAttributes {
            host: "orders.shop.svc.cluster.local",
            method,
            path,
            headers,
        }),
    }
}

const GATEWAY: &str = "cluster.local/ns/shop/sa/api-gateway";
const OTHER: &str = "cluster.local/ns/shop/sa/web";

#[test]
fn only_the_gateway_may_post() {
    let ps = Policies::compile(&[policy(
        "orders-post",
        AuthorizationAction::Allow,
        vec![
            pb::AuthorizationRule {
                from: vec![pb::Source {
                    principals: vec![exact(GATEWAY)],
                    ..Default::default()
                }],
                to: vec![pb::Operation {
                    methods: vec![exact("POST")],
                    paths: vec![prefix("/orders")],
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
    )])
    .unwrap();
    let h = HeaderMap::new();
    let svc = "orders.shop.svc.cluster.local";
    assert!(
        ps.check_request(&input(Some(GATEWAY), "POST", "/orders/1", &h), svc)
            .is_ok()
    );
    assert_eq!(
        ps.check_request(&input(Some(OTHER), "POST", "/orders/1", &h), svc)
            .unwrap_err(),
        Denied::NotAllowed
    );
    assert!(
        ps.check_request(&input(Some(OTHER), "GET", "/orders/1", &h), svc)
            .is_ok()
    );
    assert!(
        ps.check_request(&input(None, "POST", "/orders/1", &h), svc)
            .is_err()
    );
}

#[test]
fn deny_first_and_not_forms() {
    let ps = Policies::compile(&[
        policy(
            "deny-admin",
            AuthorizationAction::Deny,
            vec![pb::AuthorizationRule {
                from: vec![pb::Source {
                    not_namespaces: vec![exact("ops")],
                    ..Default::default()
                }],
                to: vec![pb::Operation {
                    paths: vec![prefix("/admin")],
                    not_methods: vec![exact("OPTIONS")],
                    ..Default::default()
                }],
                when: vec![],
            }],
        ),
        policy(
            "allow-all",
            AuthorizationAction::Allow,
            vec![pb::AuthorizationRule::default()],
        ),
    ])
    .unwrap();
    let h = HeaderMap::new();
    let svc = "s";
    assert!(matches!(
        ps.check_request(&input(Some(OTHER), "GET", "/admin/x", &h), svc),
        Err(Denied::Policy(name)) if name == "shop/deny-admin"
    ));
    // A caller without identity has no namespace, so "not in ops" holds: denied.
    assert!(
        ps.check_request(&input(None, "GET", "/admin/x", &h), svc)
            .is_err()
    );
    assert!(
        ps.check_request(&input(Some(OTHER), "OPTIONS", "/admin/x", &h), svc)
            .is_ok()
    );
    assert!(
        ps.check_request(
            &input(Some("cluster.local/ns/ops/sa/x"), "GET", "/admin", &h),
            svc
        )
        .is_ok()
    );
    assert!(
        ps.check_request(&input(Some(OTHER), "GET", "/public", &h), svc)
            .is_ok()
    );
}

#[test]
fn empty_allow_denies_everything() {
    let ps = Policies::compile(&[policy("deny-all", AuthorizationAction::Allow, vec![])]).unwrap();
    let h = HeaderMap::new();
    assert!(
        ps.check_request(&input(Some(GATEWAY), "GET", "/", &h), "s")
            .is_err()
    );
    let none = Policies::compile(&[]).unwrap();
    assert!(
        none.check_request(&input(None, "GET", "/", &h), "s")
            .is_ok()
    );
}

#[test]
fn service_scope_and_header_conditions() {
    let mut p = policy(
        "need-header",
        AuthorizationAction::Allow,
        vec![pb::AuthorizationRule {
            when: vec![pb::Condition {
                key: ConditionKey::RequestHeader as i32,
                header: "x-token".into(),
                values: vec![exact("let-me-in")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    p.scope = PolicyScope::Services as i32;
    p.services = vec!["orders".into()];
    let ps = Policies::compile(&[p]).unwrap();
    let mut h = HeaderMap::new();
    assert!(
        ps.check_request(&input(None, "GET", "/", &h), "orders")
            .is_err()
    );
    assert!(
        ps.check_request(&input(None, "GET", "/", &h), "payments")
            .is_ok()
    );
    h.insert("x-token", "let-me-in".parse().unwrap());
    assert!(
        ps.check_request(&input(None, "GET", "/", &h), "orders")
            .is_ok()
    );
}

#[test]
fn workload_scope_is_decided_per_endpoint() {
    let mut p = policy(
        "v2-only-gateway",
        AuthorizationAction::Allow,
        vec![pb::AuthorizationRule {
            from: vec![pb::Source {
                principals: vec![exact(GATEWAY)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    p.scope = PolicyScope::Workloads as i32;
    p.workloads = Some(pb::WorkloadSelector {
        workload_uids: vec!["c//Pod/shop/v2".into()],
        ..Default::default()
    });
    let ps = Policies::compile(&[p]).unwrap();
    assert!(ps.has_workload_scoped());
    let h = HeaderMap::new();
    let other = input(Some(OTHER), "GET", "/", &h);
    let pending = ps.check_request(&other, "s").unwrap();
    assert!(ps.check_endpoint(&other, pending, "c//Pod/shop/v1").is_ok());
    assert!(
        ps.check_endpoint(&other, pending, "c//Pod/shop/v2")
            .is_err()
    );
    let gw = input(Some(GATEWAY), "GET", "/", &h);
    let pending = ps.check_request(&gw, "s").unwrap();
    assert!(ps.check_endpoint(&gw, pending, "c//Pod/shop/v2").is_ok());
}

#[test]
fn l4_checks_treat_http_fields_as_istio_does() {
    let ps = Policies::compile(&[policy(
        "get-only",
        AuthorizationAction::Allow,
        vec![pb::AuthorizationRule {
            to: vec![pb::Operation {
                methods: vec![exact("GET")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    )])
    .unwrap();
    let none = HeaderMap::new();
    let mut tcp = input(Some(OTHER), "GET", "/", &none);
    tcp.http = None;
    // An ALLOW rule that needs HTTP cannot match a connection.
    assert!(ps.check_request(&tcp, "s").is_err());
    let deny = Policies::compile(&[policy(
        "no-delete",
        AuthorizationAction::Deny,
        vec![pb::AuthorizationRule {
            to: vec![pb::Operation {
                methods: vec![exact("DELETE")],
                ports: vec![80],
                ..Default::default()
            }],
            ..Default::default()
        }],
    )])
    .unwrap();
    // A DENY rule ignores what it cannot see, and denies the connection to port 80.
    assert!(deny.check_request(&tcp, "s").is_err());
    tcp.destination_port = 81;
    assert!(deny.check_request(&tcp, "s").is_ok());
}

#[test]
fn ip_blocks() {
    let b = Cidr::compile(
        &pb::IpBlock {
            address: vec![10, 0, 0, 0],
            prefix_len: 8,
        },
        "b",
    )
    .unwrap();
    assert!(b.contains("10.1.2.3".parse().unwrap()));
    assert!(b.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!b.contains("11.0.0.1".parse().unwrap()));
    let all = Cidr::compile(
        &pb::IpBlock {
            address: vec![0; 16],
            prefix_len: 0,
        },
        "b",
    )
    .unwrap();
    assert!(all.contains("fd00::1".parse().unwrap()));
    assert!(
        Cidr::compile(
            &pb::IpBlock {
                address: vec![1, 2, 3],
                prefix_len: 8
            },
            "b"
        )
        .is_err()
    );
}

#[test]
fn a_not_found_deny_policy_denies_as_no_route_and_an_allow_ignores_the_flag() {
    let mut miss = policy(
        "miss",
        AuthorizationAction::Deny,
        vec![pb::AuthorizationRule {
            to: vec![pb::Operation {
                not_paths: vec![prefix("/api/")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    miss.not_found = true;
    let ps = Policies::compile(&[miss.clone()]).unwrap();
    let h = HeaderMap::new();
    assert!(matches!(
        ps.check_request(&input(Some(GATEWAY), "GET", "/other", &h), "s"),
        Err(Denied::NoRoute(name)) if name == "shop/miss"
    ));
    assert!(
        ps.check_request(&input(Some(GATEWAY), "GET", "/api/x", &h), "s")
            .is_ok()
    );
    // The flag means nothing on an ALLOW policy: a miss is the ordinary "not allowed".
    miss.action = AuthorizationAction::Allow as i32;
    let ps = Policies::compile(&[miss]).unwrap();
    assert_eq!(
        ps.check_request(&input(Some(GATEWAY), "GET", "/api/x", &h), "s")
            .unwrap_err(),
        Denied::NotAllowed
    );
}
