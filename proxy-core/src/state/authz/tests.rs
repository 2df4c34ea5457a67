//! Table tests of policy conversion and evaluation.

use std::net::IpAddr;

use api::security::{
    self as xds, Address, Authorization, Clause, Rule, ServiceAccountMatch, string_match::MatchType,
};

use super::*;

const TD: &str = "cluster.local";

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn exact(s: &str) -> xds::StringMatch {
    xds::StringMatch {
        match_type: Some(MatchType::Exact(s.into())),
    }
}

fn prefix(s: &str) -> xds::StringMatch {
    xds::StringMatch {
        match_type: Some(MatchType::Prefix(s.into())),
    }
}

fn suffix(s: &str) -> xds::StringMatch {
    xds::StringMatch {
        match_type: Some(MatchType::Suffix(s.into())),
    }
}

fn presence() -> xds::StringMatch {
    xds::StringMatch {
        match_type: Some(MatchType::Presence(())),
    }
}

fn cidr(s: &str) -> Address {
    let (addr, len) = s.split_once('/').unwrap();
    let addr: IpAddr = addr.parse().unwrap();
    Address {
        address: match addr {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        },
        length: len.parse().unwrap(),
    }
}

fn sa(ns: &str, name: &str) -> ServiceAccountMatch {
    ServiceAccountMatch {
        namespace: ns.into(),
        service_account: name.into(),
    }
}

/// A policy with one rule of one clause holding `m`.
fn policy(name: &str, action: xds::Action, m: xds::Match) -> Policy {
    convert(Authorization {
        name: name.into(),
        namespace: "shop".into(),
        scope: xds::Scope::Namespace as i32,
        action: action as i32,
        rules: vec![Rule {
            clauses: vec![Clause { matches: vec![m] }],
        }],
        dry_run: false,
    })
    .unwrap()
}

fn destination() -> Workload {
    Workload {
        uid: "Kubernetes//Pod/shop/db-0".into(),
        name: "db-0".into(),
        namespace: "shop".into(),
        addresses: vec![ip("10.0.1.5")],
        service_account: "db".into(),
        ..Default::default()
    }
}

/// A connection from `source` (None: plaintext) at 10.0.0.7 to the destination's port 5432.
fn decide(policies: &[Policy], source: Option<&Identity>) -> Decision {
    decide_from(policies, source, ip("10.0.0.7"), 5432)
}

fn decide_from(
    policies: &[Policy],
    source: Option<&Identity>,
    source_ip: IpAddr,
    port: u16,
) -> Decision {
    let dst = destination();
    evaluate(
        policies,
        &AuthzRequest {
            source_identity: source,
            source_ip,
            destination: &dst,
            destination_port: port,
        },
    )
}

fn allowed(d: &Decision) -> bool {
    *d == Decision::Allow
}

#[test]
fn evaluation_order() {
    let web = id("shop", "web");
    let allow_web = policy(
        "allow-web",
        xds::Action::Allow,
        xds::Match {
            principals: vec![exact("cluster.local/ns/shop/sa/web")],
            ..Default::default()
        },
    );
    let allow_admin = policy(
        "allow-admin",
        xds::Action::Allow,
        xds::Match {
            principals: vec![exact("cluster.local/ns/ops/sa/admin")],
            ..Default::default()
        },
    );
    let deny_web = policy(
        "deny-web",
        xds::Action::Deny,
        xds::Match {
            namespaces: vec![exact("shop")],
            ..Default::default()
        },
    );
    let deny_other = policy(
        "deny-other",
        xds::Action::Deny,
        xds::Match {
            namespaces: vec![exact("elsewhere")],
            ..Default::default()
        },
    );
    let cases: Vec<(&str, Vec<Policy>, Decision)> = vec![
        ("no policies: allow", vec![], Decision::Allow),
        (
            "matching DENY wins over a matching ALLOW",
            vec![allow_web.clone(), deny_web.clone()],
            Decision::Deny("denied by shop/deny-web".into()),
        ),
        (
            "non-matching DENY alone: allow",
            vec![deny_other.clone()],
            Decision::Allow,
        ),
        (
            "ALLOW policies apply and one matches",
            vec![allow_admin.clone(), allow_web.clone(), deny_other.clone()],
            Decision::Allow,
        ),
        (
            "ALLOW policies apply and none matches",
            vec![allow_admin.clone(), deny_other],
            Decision::Deny("no ALLOW policy matched".into()),
        ),
    ];
    for (name, policies, expected) in cases {
        assert_eq!(decide(&policies, Some(&web)), expected, "{name}");
    }
}

#[test]
fn dry_run_policies_are_not_enforced() {
    let web = id("shop", "web");
    let mut deny_all = policy(
        "deny-all",
        xds::Action::Deny,
        xds::Match {
            namespaces: vec![presence()],
            ..Default::default()
        },
    );
    deny_all.dry_run = true;
    assert_eq!(
        decide(std::slice::from_ref(&deny_all), Some(&web)),
        Decision::Allow
    );
    // A dry-run ALLOW does not make other traffic need an ALLOW either.
    let mut allow_nobody = policy(
        "allow-nobody",
        xds::Action::Allow,
        xds::Match {
            namespaces: vec![exact("nobody")],
            ..Default::default()
        },
    );
    allow_nobody.dry_run = true;
    assert_eq!(decide(&[allow_nobody.clone()], Some(&web)), Decision::Allow);
    allow_nobody.dry_run = false;
    assert!(!allowed(&decide(&[allow_nobody], Some(&web))));
    deny_all.dry_run = false;
    assert!(!allowed(&decide(&[deny_all], Some(&web))));
}

#[test]
fn rule_structure() {
    let web = id("shop", "web");
    let base = |rules: Vec<Rule>| {
        convert(Authorization {
            name: "p".into(),
            namespace: "shop".into(),
            scope: xds::Scope::Global as i32,
            action: xds::Action::Allow as i32,
            rules,
            dry_run: false,
        })
        .unwrap()
    };
    let ns = |n: &str| xds::Match {
        namespaces: vec![exact(n)],
        ..Default::default()
    };
    let port = |p: u32| xds::Match {
        destination_ports: vec![p],
        ..Default::default()
    };
    let cases: Vec<(&str, Vec<Rule>, bool)> = vec![
        ("no rules: matches nothing (allow-nothing)", vec![], false),
        (
            "a rule without clauses matches everything",
            vec![Rule { clauses: vec![] }],
            true,
        ),
        (
            "a clause without matches matches",
            vec![Rule {
                clauses: vec![Clause { matches: vec![] }],
            }],
            true,
        ),
        (
            "an empty match matches nothing",
            vec![Rule {
                clauses: vec![Clause {
                    matches: vec![xds::Match::default()],
                }],
            }],
            false,
        ),
        (
            "all clauses must match",
            vec![Rule {
                clauses: vec![
                    Clause {
                        matches: vec![ns("shop")],
                    },
                    Clause {
                        matches: vec![port(80)],
                    },
                ],
            }],
            false,
        ),
        (
            "any match of a clause suffices",
            vec![Rule {
                clauses: vec![
                    Clause {
                        matches: vec![ns("shop")],
                    },
                    Clause {
                        matches: vec![port(80), port(5432)],
                    },
                ],
            }],
            true,
        ),
        (
            "any rule suffices",
            vec![
                Rule {
                    clauses: vec![Clause {
                        matches: vec![ns("other")],
                    }],
                },
                Rule {
                    clauses: vec![Clause {
                        matches: vec![port(5432)],
                    }],
                },
            ],
            true,
        ),
        (
            "every set field of a match must hold",
            vec![Rule {
                clauses: vec![Clause {
                    matches: vec![xds::Match {
                        namespaces: vec![exact("shop")],
                        destination_ports: vec![80],
                        ..Default::default()
                    }],
                }],
            }],
            false,
        ),
    ];
    for (name, rules, matches) in cases {
        let d = decide(&[base(rules)], Some(&web));
        assert_eq!(allowed(&d), matches, "{name}");
    }
}

/// Every field, positive and negative, against a connection from shop/web at 10.0.0.7 to
/// 10.0.1.5:5432; and the same connection without identity.
#[test]
fn match_fields() {
    let web = id("shop", "web");
    type Case = (&'static str, xds::Match, bool, bool);
    let m = xds::Match::default;
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // (name, match, with identity, plaintext)
        ("namespace exact", xds::Match { namespaces: vec![exact("shop")], ..m() }, true, false),
        ("namespace other", xds::Match { namespaces: vec![exact("ops")], ..m() }, false, false),
        ("namespace prefix", xds::Match { namespaces: vec![prefix("sh")], ..m() }, true, false),
        ("namespace suffix", xds::Match { namespaces: vec![suffix("op")], ..m() }, true, false),
        ("namespace presence", xds::Match { namespaces: vec![presence()], ..m() }, true, false),
        ("not_namespaces hit", xds::Match { not_namespaces: vec![exact("shop")], ..m() }, false, true),
        ("not_namespaces miss", xds::Match { not_namespaces: vec![exact("ops")], ..m() }, true, true),
        (
            "principal exact (no spiffe:// prefix)",
            xds::Match { principals: vec![exact("cluster.local/ns/shop/sa/web")], ..m() },
            true,
            false,
        ),
        (
            "principal with spiffe:// never matches",
            xds::Match { principals: vec![exact("spiffe://cluster.local/ns/shop/sa/web")], ..m() },
            false,
            false,
        ),
        (
            "principal prefix",
            xds::Match { principals: vec![prefix("cluster.local/ns/shop/")], ..m() },
            true,
            false,
        ),
        ("principal suffix", xds::Match { principals: vec![suffix("/sa/web")], ..m() }, true, false),
        ("principal presence", xds::Match { principals: vec![presence()], ..m() }, true, false),
        (
            "not_principals presence (STRICT mTLS)",
            xds::Match { not_principals: vec![presence()], ..m() },
            false,
            true,
        ),
        (
            "not_principals other",
            xds::Match { not_principals: vec![suffix("/sa/admin")], ..m() },
            true,
            true,
        ),
        ("service account", xds::Match { service_accounts: vec![sa("shop", "web")], ..m() }, true, false),
        (
            "service account other namespace",
            xds::Match { service_accounts: vec![sa("ops", "web")], ..m() },
            false,
            false,
        ),
        (
            "not_service_accounts hit",
            xds::Match { not_service_accounts: vec![sa("shop", "web")], ..m() },
            false,
            true,
        ),
        ("source ip in /24", xds::Match { source_ips: vec![cidr("10.0.0.0/24")], ..m() }, true, true),
        ("source ip exact /32", xds::Match { source_ips: vec![cidr("10.0.0.7/32")], ..m() }, true, true),
        ("source ip outside", xds::Match { source_ips: vec![cidr("10.0.0.8/30")], ..m() }, false, false),
        ("source ip /0", xds::Match { source_ips: vec![cidr("0.0.0.0/0")], ..m() }, true, true),
        ("source ip other family", xds::Match { source_ips: vec![cidr("::/0")], ..m() }, false, false),
        ("source ip /12 odd bits", xds::Match { source_ips: vec![cidr("10.15.0.0/12")], ..m() }, true, true),
        ("not_source_ips hit", xds::Match { not_source_ips: vec![cidr("10.0.0.0/8")], ..m() }, false, false),
        ("not_source_ips miss", xds::Match { not_source_ips: vec![cidr("192.168.0.0/16")], ..m() }, true, true),
        ("destination ip", xds::Match { destination_ips: vec![cidr("10.0.1.5/32")], ..m() }, true, true),
        ("destination ip outside", xds::Match { destination_ips: vec![cidr("10.0.2.0/24")], ..m() }, false, false),
        ("not_destination_ips hit", xds::Match { not_destination_ips: vec![cidr("10.0.1.0/24")], ..m() }, false, false),
        ("destination port", xds::Match { destination_ports: vec![80, 5432], ..m() }, true, true),
        ("destination port other", xds::Match { destination_ports: vec![80], ..m() }, false, false),
        ("not_destination_ports hit", xds::Match { not_destination_ports: vec![5432], ..m() }, false, false),
        ("not_destination_ports miss", xds::Match { not_destination_ports: vec![80], ..m() }, true, true),
        (
            "positive and negative together",
            xds::Match {
                namespaces: vec![prefix("s")],
                not_principals: vec![suffix("/sa/web")],
                ..m()
            },
            false,
            false,
        ),
    ];
    for (name, m, with_identity, plaintext) in cases {
        let p = [policy("p", xds::Action::Allow, m)];
        assert_eq!(
            allowed(&decide(&p, Some(&web))),
            with_identity,
            "{name} (mTLS)"
        );
        assert_eq!(allowed(&decide(&p, None)), plaintext, "{name} (plaintext)");
    }
}

#[test]
fn ipv4_mapped_source_addresses_match_ipv4_ranges() {
    let p = [policy(
        "p",
        xds::Action::Allow,
        xds::Match {
            source_ips: vec![cidr("10.0.0.0/24")],
            ..Default::default()
        },
    )];
    let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
    assert!(allowed(&decide_from(&p, None, mapped, 1)));
    let v6 = [policy(
        "p",
        xds::Action::Allow,
        xds::Match {
            source_ips: vec![cidr("fd00::/8")],
            ..Default::default()
        },
    )];
    assert!(allowed(&decide_from(&v6, None, ip("fd12::1"), 1)));
    assert!(!allowed(&decide_from(&v6, None, ip("fe12::1"), 1)));
}

/// The shapes the controller sends for PeerAuthentication (see its translation): the static
/// STRICT policy, and port-level exceptions in both directions.
#[test]
fn peer_authentication_shapes() {
    let web = id("shop", "web");
    let no_principal = || xds::Match {
        not_principals: vec![presence()],
        ..Default::default()
    };
    let deny = |rules: Vec<Rule>| {
        convert(Authorization {
            name: "istio_converted_static_strict".into(),
            namespace: "istio-system".into(),
            scope: xds::Scope::WorkloadSelector as i32,
            action: xds::Action::Deny as i32,
            rules,
            dry_run: false,
        })
        .unwrap()
    };
    // STRICT: plaintext denied on every port, mTLS allowed.
    let strict = deny(vec![Rule {
        clauses: vec![Clause {
            matches: vec![no_principal()],
        }],
    }]);
    let strict = [strict];
    assert_eq!(
        decide(&strict, None),
        Decision::Deny("denied by istio-system/istio_converted_static_strict".into())
    );
    assert!(allowed(&decide(&strict, Some(&web))));
    // STRICT with port 8080 PERMISSIVE: plaintext allowed on 8080 only.
    let strict_except = [deny(vec![Rule {
        clauses: vec![
            Clause {
                matches: vec![xds::Match {
                    not_destination_ports: vec![8080],
                    ..Default::default()
                }],
            },
            Clause {
                matches: vec![no_principal()],
            },
        ],
    }])];
    let src = ip("10.0.0.7");
    assert!(!allowed(&decide_from(&strict_except, None, src, 5432)));
    assert!(allowed(&decide_from(&strict_except, None, src, 8080)));
    assert!(allowed(&decide_from(&strict_except, Some(&web), src, 5432)));
    // PERMISSIVE with port 5432 STRICT: plaintext denied on 5432 only.
    let mut only_port = no_principal();
    only_port.destination_ports = vec![5432];
    let permissive_except = [deny(vec![Rule {
        clauses: vec![Clause {
            matches: vec![only_port],
        }],
    }])];
    assert!(!allowed(&decide_from(&permissive_except, None, src, 5432)));
    assert!(allowed(&decide_from(&permissive_except, None, src, 8080)));
    assert!(allowed(&decide_from(
        &permissive_except,
        Some(&web),
        src,
        5432
    )));
    // PERMISSIVE and DISABLE: no policy is referenced at all.
    assert!(allowed(&decide(&[], None)));
}

#[test]
fn conversion_refuses_invalid_policies() {
    let valid = || Authorization {
        name: "p".into(),
        namespace: "shop".into(),
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![xds::Match::default()],
            }],
        }],
        ..Default::default()
    };
    type Edit = fn(&mut Authorization);
    let cases: &[(&str, Edit)] = &[
        ("Authorization.name is empty", |p| p.name.clear()),
        ("Authorization.namespace is empty", |p| p.namespace.clear()),
        ("Authorization.scope has unknown value 5", |p| p.scope = 5),
        ("Authorization.action has unknown value 3", |p| p.action = 3),
        (
            "rules[0].clauses[0].matches[0].principals[0].match_type is not set",
            |p| {
                p.rules[0].clauses[0].matches[0].principals =
                    vec![xds::StringMatch { match_type: None }]
            },
        ),
        (
            "rules[0].clauses[0].matches[0].source_ips[0].address has 5 bytes",
            |p| {
                p.rules[0].clauses[0].matches[0].source_ips = vec![Address {
                    address: vec![1, 2, 3, 4, 5],
                    length: 8,
                }]
            },
        ),
        ("not_destination_ips[0].length has prefix length 33", |p| {
            p.rules[0].clauses[0].matches[0].not_destination_ips = vec![Address {
                address: vec![10, 0, 0, 0],
                length: 33,
            }]
        }),
        ("destination_ports[0] is 65536", |p| {
            p.rules[0].clauses[0].matches[0].destination_ports = vec![65536]
        }),
    ];
    for (expected, edit) in cases {
        let mut p = valid();
        edit(&mut p);
        let err = convert(p).expect_err(expected).to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
    let ok = convert(valid()).unwrap();
    assert_eq!(ok.key(), "shop/p");
    assert_eq!((ok.scope, ok.action), (Scope::Global, Action::Allow));
}
