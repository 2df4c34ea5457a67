//! Pins the wire format of the waypoint configuration (`mesh.waypoint.v1`):
//! every field of every message is set, and the encoding is compared with
//! bytes built from the field numbers written down here. Renumbering a field
//! in the .proto file breaks waypoints built against the old numbers, and
//! fails here first.

use std::collections::BTreeMap;

use api::prost::Message;
use api::prost_types::Duration;
use api::waypoint::*;

/// Wire type of varints (integers, bools, enums).
const VARINT: u8 = 0;
/// Wire type of 64-bit values (doubles).
const I64: u8 = 1;
/// Wire type of length-delimited values (strings, bytes, messages, packed).
const LEN: u8 = 2;

/// A tag for fields 1..=15 (one byte).
fn tag(field: u8, wire: u8) -> u8 {
    assert!((1..=15).contains(&field));
    (field << 3) | wire
}

/// `field` = small varint.
fn int(field: u8, v: u8) -> Vec<u8> {
    assert!(v < 0x80);
    vec![tag(field, VARINT), v]
}

/// A length as a base-128 varint, low groups first.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// `field` = length-delimited bytes.
fn len(field: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag(field, LEN)];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// `field` = double.
fn double(field: u8, v: f64) -> Vec<u8> {
    let mut out = vec![tag(field, I64)];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// A message body made of fields.
fn msg(fields: &[Vec<u8>]) -> Vec<u8> {
    fields.concat()
}

/// `google.protobuf.Duration { seconds }`.
fn secs(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}
fn secs_wire(field: u8, s: u8) -> Vec<u8> {
    len(field, &int(1, s))
}

fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M, expected: &[u8]) {
    assert_eq!(m.encode_to_vec(), expected, "encoding of {m:?}");
    assert_eq!(&M::decode(expected).expect("decodes"), m, "decoding");
}

fn source() -> (ConfigSource, Vec<u8>) {
    (
        ConfigSource {
            kind: "k".into(),
            namespace: "n".into(),
            name: "m".into(),
        },
        msg(&[len(1, b"k"), len(2, b"n"), len(3, b"m")]),
    )
}

fn exact(s: &str) -> StringMatch {
    StringMatch {
        kind: Some(string_match::Kind::Exact(s.into())),
        ignore_case: false,
    }
}

#[test]
fn string_and_path_matches() {
    let cases: Vec<(StringMatch, Vec<u8>)> = vec![
        (exact("a"), len(1, b"a")),
        (
            StringMatch {
                kind: Some(string_match::Kind::Prefix("b".into())),
                ignore_case: true,
            },
            msg(&[len(2, b"b"), int(6, 1)]),
        ),
        (
            StringMatch {
                kind: Some(string_match::Kind::Suffix("c".into())),
                ignore_case: false,
            },
            len(3, b"c"),
        ),
        (
            StringMatch {
                kind: Some(string_match::Kind::Regex("d".into())),
                ignore_case: false,
            },
            len(4, b"d"),
        ),
        (
            StringMatch {
                kind: Some(string_match::Kind::Present(())),
                ignore_case: false,
            },
            len(5, b""),
        ),
    ];
    for (m, wire) in cases {
        assert_wire(&m, &wire);
    }
    let paths: Vec<(path_match::Kind, Vec<u8>)> = vec![
        (path_match::Kind::Exact("/a".into()), len(1, b"/a")),
        (path_match::Kind::Prefix("/b".into()), len(2, b"/b")),
        (path_match::Kind::SegmentPrefix("/c".into()), len(3, b"/c")),
        (path_match::Kind::Regex("/d".into()), len(4, b"/d")),
    ];
    for (kind, wire) in paths {
        let m = PathMatch {
            kind: Some(kind),
            ignore_case: true,
        };
        assert_wire(&m, &msg(&[wire, int(5, 1)]));
    }
}

#[test]
fn route() {
    let (src, src_wire) = source();
    let dest = Destination {
        hostname: "h".into(),
        namespace: "n".into(),
        port: 8,
        subset: "s".into(),
        subset_labels: BTreeMap::from([("k".into(), "v".into())]),
    };
    let dest_wire = msg(&[
        len(1, b"h"),
        len(2, b"n"),
        int(3, 8),
        len(4, b"s"),
        // A map entry is a message with key = 1, value = 2.
        len(5, &msg(&[len(1, b"k"), len(2, b"v")])),
    ]);
    let headers = HeaderModifier {
        set: vec![Header {
            name: "a".into(),
            value: "1".into(),
        }],
        add: vec![Header {
            name: "b".into(),
            value: "2".into(),
        }],
        remove: vec!["c".into()],
    };
    let headers_wire = msg(&[
        len(1, &msg(&[len(1, b"a"), len(2, b"1")])),
        len(2, &msg(&[len(1, b"b"), len(2, b"2")])),
        len(3, b"c"),
    ]);
    let route = Route {
        name: "r".into(),
        source: Some(src),
        matches: vec![RouteMatch {
            path: Some(PathMatch {
                kind: Some(path_match::Kind::Exact("/".into())),
                ignore_case: false,
            }),
            method: Some(exact("G")),
            headers: vec![HeaderMatch {
                name: "x".into(),
                value: Some(exact("y")),
                invert: true,
            }],
            query_params: vec![QueryParamMatch {
                name: "q".into(),
                value: Some(exact("z")),
            }],
            not_paths: vec![PathMatch {
                kind: Some(path_match::Kind::Exact("/n".into())),
                ignore_case: false,
            }],
            not_methods: vec![exact("P")],
            port: 9,
            source_namespace: "sn".into(),
        }],
        action: Some(route::Action::Forward(Forward {
            destinations: vec![WeightedDestination {
                destination: Some(dest.clone()),
                weight: 3,
                request_headers: Some(headers.clone()),
                response_headers: Some(headers.clone()),
            }],
            rewrite: Some(UrlRewrite {
                path: Some(url_rewrite::Path::Prefix("/p".into())),
                host: "w".into(),
            }),
            mirrors: vec![Mirror {
                destination: Some(dest.clone()),
                percentage: 50.0,
            }],
            timeout: Some(secs(5)),
            attempt_timeout: Some(secs(2)),
            retry: Some(RetryPolicy {
                attempts: 2,
                retry_on: vec!["5xx".into()],
                retriable_status_codes: vec![10],
                backoff: Some(secs(1)),
                retry_non_idempotent: true,
            }),
        })),
        request_headers: Some(headers.clone()),
        response_headers: Some(headers.clone()),
        fault: Some(Fault {
            delay: Some(FaultDelay {
                fixed_delay: Some(secs(3)),
                percentage: 10.0,
            }),
            abort: Some(FaultAbort {
                http_status: 100,
                grpc_status: 14,
                percentage: 20.0,
            }),
        }),
        rule_name: "n".into(),
    };
    let match_wire = msg(&[
        len(1, &len(1, b"/")),
        len(2, &len(1, b"G")),
        len(3, &msg(&[len(1, b"x"), len(2, &len(1, b"y")), int(3, 1)])),
        len(4, &msg(&[len(1, b"q"), len(2, &len(1, b"z"))])),
        len(5, &len(1, b"/n")),
        len(6, &len(1, b"P")),
        int(7, 9),
        len(8, b"sn"),
    ]);
    let forward_wire = msg(&[
        len(
            1,
            &msg(&[
                len(1, &dest_wire),
                int(2, 3),
                len(3, &headers_wire),
                len(4, &headers_wire),
            ]),
        ),
        len(2, &msg(&[len(2, b"/p"), len(4, b"w")])),
        len(3, &msg(&[len(1, &dest_wire), double(2, 50.0)])),
        secs_wire(4, 5),
        secs_wire(5, 2),
        len(
            6,
            &msg(&[
                int(1, 2),
                len(2, b"5xx"),
                // Repeated scalars are packed in proto3.
                len(3, &[10]),
                secs_wire(4, 1),
                int(5, 1),
            ]),
        ),
    ]);
    let fault_wire = msg(&[
        len(1, &msg(&[secs_wire(1, 3), double(2, 10.0)])),
        len(2, &msg(&[int(1, 100), int(2, 14), double(3, 20.0)])),
    ]);
    // prost writes fields in number order, the oneof (4..=6) included.
    let expected = msg(&[
        len(1, b"r"),
        len(2, &src_wire),
        len(3, &match_wire),
        len(4, &forward_wire),
        len(7, &headers_wire),
        len(8, &headers_wire),
        len(9, &fault_wire),
        len(10, b"n"),
    ]);
    assert_wire(&route, &expected);

    let redirect = Route {
        action: Some(route::Action::Redirect(Redirect {
            scheme: "s".into(),
            host: "h".into(),
            port: 1,
            path: Some(redirect::Path::FullPath("/f".into())),
            status: 101,
        })),
        ..Default::default()
    };
    let wire = len(
        5,
        &msg(&[
            len(1, b"s"),
            len(2, b"h"),
            int(3, 1),
            len(4, b"/f"),
            int(6, 101),
        ]),
    );
    assert_wire(&redirect, &wire);

    let direct = Route {
        action: Some(route::Action::DirectResponse(DirectResponse {
            status: 99,
            body: b"b".to_vec(),
        })),
        ..Default::default()
    };
    assert_wire(&direct, &len(6, &msg(&[int(1, 99), len(2, b"b")])));

    let rewrites: Vec<(url_rewrite::Path, Vec<u8>)> = vec![
        (url_rewrite::Path::FullPath("/a".into()), len(1, b"/a")),
        (
            url_rewrite::Path::Regex(RegexRewrite {
                pattern: "p".into(),
                substitution: "s".into(),
            }),
            len(3, &msg(&[len(1, b"p"), len(2, b"s")])),
        ),
    ];
    for (path, wire) in rewrites {
        let r = UrlRewrite {
            path: Some(path),
            host: String::new(),
        };
        assert_wire(&r, &wire);
    }
    let r = Redirect {
        path: Some(redirect::Path::Prefix("/x".into())),
        ..Default::default()
    };
    assert_wire(&r, &len(5, b"/x"));
}

#[test]
fn waypoint_service_and_rate_limit() {
    let (src, src_wire) = source();
    let w = Waypoint {
        name: "w".into(),
        namespace: "n".into(),
        services: vec![Service {
            hostname: "h".into(),
            namespace: "n".into(),
            name: "s".into(),
            addresses: vec!["a".into()],
            ports: vec![Port {
                name: "p".into(),
                port: 80,
                target_port: 81,
                protocol: Protocol::Grpc as i32,
            }],
            routes: vec![Route {
                name: "r".into(),
                ..Default::default()
            }],
            rate_limit: Some(LocalRateLimit {
                max_tokens: 10,
                tokens_per_fill: 5,
                fill_interval: Some(secs(1)),
                source: Some(src),
            }),
            telemetry: None,
            tcp_routes: Vec::new(),
        }],
        destinations: vec![DestinationPolicy {
            hostname: "h".into(),
            ..Default::default()
        }],
        authorization_policies: vec![AuthorizationPolicy {
            name: "a".into(),
            ..Default::default()
        }],
        xfcc_include_client_identity: true,
        tracing_providers: Vec::new(),
        workload_rate_limits: vec![WorkloadRateLimit {
            name: "l".into(),
            namespace: "n".into(),
            workload_uids: vec!["u".into()],
            ports: vec![80],
            total: Some(LocalRateLimit {
                max_tokens: 10,
                ..Default::default()
            }),
            per_identity: Some(LocalRateLimit {
                max_tokens: 2,
                ..Default::default()
            }),
            overrides: vec![IdentityRateLimit {
                principals: vec!["p".into()],
                limit: Some(LocalRateLimit {
                    max_tokens: 4,
                    ..Default::default()
                }),
            }],
        }],
    };
    let limit_wire = msg(&[
        len(1, b"l"),
        len(2, b"n"),
        len(3, b"u"),
        len(4, &[80]),
        len(5, &int(1, 10)),
        len(6, &int(1, 2)),
        len(7, &msg(&[len(1, b"p"), len(2, &int(1, 4))])),
    ]);
    let service_wire = msg(&[
        len(1, b"h"),
        len(2, b"n"),
        len(3, b"s"),
        len(4, b"a"),
        len(5, &msg(&[len(1, b"p"), int(2, 80), int(3, 81), int(4, 3)])),
        len(6, &len(1, b"r")),
        len(
            7,
            &msg(&[int(1, 10), int(2, 5), secs_wire(3, 1), len(4, &src_wire)]),
        ),
    ]);
    let expected = msg(&[
        len(1, b"w"),
        len(2, b"n"),
        len(3, &service_wire),
        len(4, &len(1, b"h")),
        len(5, &len(1, b"a")),
        int(6, 1),
        len(8, &limit_wire),
    ]);
    assert_wire(&w, &expected);
    assert_eq!(Protocol::Unspecified as i32, 0);
    assert_eq!(Protocol::Http as i32, 1);
    assert_eq!(Protocol::Http2 as i32, 2);
    assert_eq!(Protocol::Tcp as i32, 4);
}

#[test]
fn destination_policy() {
    let (src, src_wire) = source();
    let tp = TrafficPolicy {
        load_balancer: LoadBalancer::Random as i32,
        connection_pool: Some(ConnectionPool {
            max_connections: 1,
            max_pending_requests: 2,
            max_requests: 3,
            max_requests_per_connection: 4,
            max_retries: 5,
            connect_timeout: Some(secs(6)),
        }),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx_errors: 7,
            consecutive_gateway_errors: 8,
            interval: Some(secs(9)),
            base_ejection_time: Some(secs(10)),
            max_ejection_percent: 11,
        }),
    };
    let tp_wire = msg(&[
        int(1, 2),
        len(
            2,
            &msg(&[
                int(1, 1),
                int(2, 2),
                int(3, 3),
                int(4, 4),
                int(5, 5),
                secs_wire(6, 6),
            ]),
        ),
        len(
            3,
            &msg(&[
                int(1, 7),
                int(2, 8),
                secs_wire(3, 9),
                secs_wire(4, 10),
                int(5, 11),
            ]),
        ),
    ]);
    let p = DestinationPolicy {
        hostname: "h".into(),
        namespace: "n".into(),
        traffic_policy: Some(tp),
        subsets: vec![Subset {
            name: "v1".into(),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            workload_uids: vec!["u".into()],
            traffic_policy: Some(tp),
        }],
        retry_budget: Some(RetryBudget {
            retry_ratio: 0.25,
            min_retries_per_second: 10,
            ttl: Some(secs(12)),
        }),
        sources: vec![src],
    };
    let expected = msg(&[
        len(1, b"h"),
        len(2, b"n"),
        len(3, &tp_wire),
        len(
            4,
            &msg(&[
                len(1, b"v1"),
                len(2, &msg(&[len(1, b"k"), len(2, b"v")])),
                len(3, b"u"),
                len(4, &tp_wire),
            ]),
        ),
        len(5, &msg(&[double(1, 0.25), int(2, 10), secs_wire(3, 12)])),
        len(6, &src_wire),
    ]);
    assert_wire(&p, &expected);
    assert_eq!(LoadBalancer::LeastRequest as i32, 0, "the default");
    assert_eq!(LoadBalancer::RoundRobin as i32, 1);
}

#[test]
fn authorization_policy() {
    let ip = IpBlock {
        address: vec![10, 0, 0, 0],
        prefix_len: 8,
    };
    let ip_wire = msg(&[len(1, &[10, 0, 0, 0]), int(2, 8)]);
    let s = exact("s");
    let s_wire = len(1, b"s");
    let p = AuthorizationPolicy {
        name: "a".into(),
        namespace: "n".into(),
        action: AuthorizationAction::Deny as i32,
        scope: PolicyScope::Workloads as i32,
        services: vec!["h".into()],
        workloads: Some(WorkloadSelector {
            namespace: "n".into(),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            workload_uids: vec!["u".into()],
        }),
        rules: vec![AuthorizationRule {
            from: vec![api::waypoint::Source {
                principals: vec![s.clone()],
                not_principals: vec![s.clone()],
                namespaces: vec![s.clone()],
                not_namespaces: vec![s.clone()],
                ip_blocks: vec![ip.clone()],
                not_ip_blocks: vec![ip.clone()],
                remote_ip_blocks: vec![ip.clone()],
                not_remote_ip_blocks: vec![ip.clone()],
            }],
            to: vec![Operation {
                hosts: vec![s.clone()],
                not_hosts: vec![s.clone()],
                ports: vec![1],
                not_ports: vec![2],
                methods: vec![s.clone()],
                not_methods: vec![s.clone()],
                paths: vec![s.clone()],
                not_paths: vec![s.clone()],
            }],
            when: vec![Condition {
                key: ConditionKey::RequestHeader as i32,
                header: "x".into(),
                values: vec![s.clone()],
                not_values: vec![s.clone()],
                ip_values: vec![ip.clone()],
                not_ip_values: vec![ip.clone()],
                port_values: vec![3],
                not_port_values: vec![4],
            }],
        }],
        not_found: true,
    };
    let from_wire = msg(&[
        len(1, &s_wire),
        len(2, &s_wire),
        len(3, &s_wire),
        len(4, &s_wire),
        len(5, &ip_wire),
        len(6, &ip_wire),
        len(7, &ip_wire),
        len(8, &ip_wire),
    ]);
    let to_wire = msg(&[
        len(1, &s_wire),
        len(2, &s_wire),
        len(3, &[1]),
        len(4, &[2]),
        len(5, &s_wire),
        len(6, &s_wire),
        len(7, &s_wire),
        len(8, &s_wire),
    ]);
    let when_wire = msg(&[
        int(1, 1),
        len(2, b"x"),
        len(3, &s_wire),
        len(4, &s_wire),
        len(5, &ip_wire),
        len(6, &ip_wire),
        len(7, &[3]),
        len(8, &[4]),
    ]);
    let expected = msg(&[
        len(1, b"a"),
        len(2, b"n"),
        int(3, 1),
        int(4, 2),
        len(5, b"h"),
        len(
            6,
            &msg(&[
                len(1, b"n"),
                len(2, &msg(&[len(1, b"k"), len(2, b"v")])),
                len(3, b"u"),
            ]),
        ),
        len(
            7,
            &msg(&[len(1, &from_wire), len(2, &to_wire), len(3, &when_wire)]),
        ),
        int(8, 1),
    ]);
    assert_wire(&p, &expected);
    assert_eq!(AuthorizationAction::Allow as i32, 0);
    assert_eq!(PolicyScope::Waypoint as i32, 0);
    assert_eq!(PolicyScope::Services as i32, 1);
    for (key, n) in [
        (ConditionKey::SourceIp, 2),
        (ConditionKey::RemoteIp, 3),
        (ConditionKey::SourceNamespace, 4),
        (ConditionKey::SourcePrincipal, 5),
        (ConditionKey::DestinationIp, 6),
        (ConditionKey::DestinationPort, 7),
    ] {
        assert_eq!(key as i32, n, "{key:?}");
    }
}

#[test]
fn type_url() {
    assert_eq!(
        api::WAYPOINT_TYPE_URL,
        "type.googleapis.com/mesh.waypoint.v1.Waypoint"
    );
    let any = api::pack(&Waypoint {
        name: "w".into(),
        ..Default::default()
    });
    assert_eq!(any.type_url, api::WAYPOINT_TYPE_URL);
}

#[test]
fn waypoint_telemetry() {
    let (src, src_wire) = source();
    let provider = TracingProvider {
        name: "otel".into(),
        service: "c.o.svc".into(),
        namespace: "o".into(),
        port: 17,
        max_tag_length: 9,
        http_path: "/p".into(),
        timeout_ms: 3,
        headers: [("k".to_string(), "v".to_string())].into(),
    };
    assert_wire(
        &provider,
        &msg(&[
            len(1, b"otel"),
            len(2, b"c.o.svc"),
            len(3, b"o"),
            int(4, 17),
            int(5, 9),
            len(6, b"/p"),
            int(7, 3),
            len(8, &msg(&[len(1, b"k"), len(2, b"v")])),
        ]),
    );
    let tags = vec![
        CustomTag {
            tag: "l".into(),
            source: Some(custom_tag::Source::Literal("v".into())),
        },
        CustomTag {
            tag: "h".into(),
            source: Some(custom_tag::Source::Header(ValueFrom {
                name: "x".into(),
                default_value: "d".into(),
            })),
        },
        CustomTag {
            tag: "e".into(),
            source: Some(custom_tag::Source::Environment(ValueFrom {
                name: "E".into(),
                default_value: String::new(),
            })),
        },
    ];
    let telemetry = Telemetry {
        tracing: Some(Tracing {
            provider: "otel".into(),
            random_sampling_percentage: 10.0,
            custom_tags: tags,
            disable_span_reporting: true,
        }),
        access_log_disabled: true,
        metric_overrides: vec![MetricOverride {
            metric: "REQUEST_COUNT".into(),
            disabled: true,
            remove_tags: vec!["a".into()],
            upsert_tags: vec![Header {
                name: "b".into(),
                value: "c".into(),
            }],
        }],
        sources: vec![src],
    };
    let tracing_wire = msg(&[
        len(1, b"otel"),
        double(2, 10.0),
        len(3, &msg(&[len(1, b"l"), len(2, b"v")])),
        len(
            3,
            &msg(&[len(1, b"h"), len(3, &msg(&[len(1, b"x"), len(2, b"d")]))]),
        ),
        len(3, &msg(&[len(1, b"e"), len(4, &len(1, b"E"))])),
        int(4, 1),
    ]);
    let override_wire = msg(&[
        len(1, b"REQUEST_COUNT"),
        int(2, 1),
        len(3, b"a"),
        len(4, &msg(&[len(1, b"b"), len(2, b"c")])),
    ]);
    assert_wire(
        &telemetry,
        &msg(&[
            len(1, &tracing_wire),
            int(2, 1),
            len(3, &override_wire),
            len(4, &src_wire),
        ]),
    );
    let service = Service {
        telemetry: Some(Telemetry::default()),
        ..Default::default()
    };
    assert_wire(&service, &len(8, &[]));
    let w = Waypoint {
        tracing_providers: vec![TracingProvider::default()],
        ..Default::default()
    };
    assert_wire(&w, &len(7, &[]));
}
