//! Pins the wire format: messages are encoded with prost and compared with
//! byte strings written by hand from the upstream field numbers. A wrong
//! field number, wire type or enum value in a .proto file fails here.
//!
//! Tag bytes are `(field_number << 3) | wire_type`, with wire type 0 for
//! varints and 2 for length-delimited values; tags past field 15 take two
//! varint bytes. prost writes fields in field-number order.

use std::collections::{BTreeMap, HashMap};

use api::ca::IstioCertificateRequest;
use api::core::Node;
use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use api::prost::Message;
use api::prost_types::{Duration, Struct, Value, value};
use api::rpc::Status;
use api::security::{
    Action, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
    string_match,
};
use api::workload::{
    Address, GatewayAddress, NetworkAddress, Port, PortList, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType, address, gateway_address,
};
use api::zds::{
    Ack, AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, Version, WorkloadInfo,
    WorkloadRequest, WorkloadResponse, ZdsHello, workload_request, workload_response,
};

/// Joins hand-written pieces (tags, lengths, payload bytes) into one buffer.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Asserts that `msg` encodes to `expected` and decodes back to itself.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    let got = msg.encode_to_vec();
    assert_eq!(got, expected, "encoding of {msg:?}");
    assert_eq!(&M::decode(expected).expect("decode"), msg, "decoding");
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.into())),
    }
}

/// "type.googleapis.com/istio.workload.Address": 42 bytes.
const ADDRESS_URL: &[u8] = b"type.googleapis.com/istio.workload.Address";

#[test]
fn workload() {
    let workload = Workload {
        uid: "u1".into(),
        name: "pod".into(),
        namespace: "ns".into(),
        addresses: vec![vec![10, 0, 0, 1], vec![10, 0, 0, 2]],
        tunnel_protocol: TunnelProtocol::Hbone as i32,
        service_account: "sa".into(),
        waypoint: Some(GatewayAddress {
            destination: Some(gateway_address::Destination::Address(NetworkAddress {
                network: String::new(),
                address: vec![10, 0, 0, 9],
            })),
            hbone_mtls_port: 15008,
        }),
        node: "n1".into(),
        workload_type: WorkloadType::Pod as i32,
        status: WorkloadStatus::Unhealthy as i32,
        services: BTreeMap::from([(
            "ns/svc".to_string(),
            PortList {
                ports: vec![Port {
                    service_port: 80,
                    target_port: 8080,
                }],
            },
        )]),
        capacity: Some(3),
        ..Default::default()
    };
    let expected = cat(&[
        &[0x0a, 0x03], // field 1 (name), LEN 3
        b"pod",
        &[0x12, 0x02], // field 2 (namespace), LEN 2
        b"ns",
        &[0x1a, 0x04, 10, 0, 0, 1], // field 3 (addresses), LEN 4: 10.0.0.1
        &[0x1a, 0x04, 10, 0, 0, 2], // field 3 (addresses), LEN 4: 10.0.0.2
        &[0x28, 0x01],              // field 5 (tunnel_protocol), VARINT 1 = HBONE
        &[0x3a, 0x02],              // field 7 (service_account), LEN 2
        b"sa",
        &[0x42, 0x0b],              // field 8 (waypoint: GatewayAddress), LEN 11
        &[0x12, 0x06],              //   field 2 (address: NetworkAddress), LEN 6
        &[0x12, 0x04, 10, 0, 0, 9], //     field 2 (address), LEN 4: 10.0.0.9
        &[0x18, 0xa0, 0x75],        //   field 3 (hbone_mtls_port), VARINT 15008
        &[0x4a, 0x02],              // field 9 (node), LEN 2
        b"n1",
        &[0x60, 0x02],       // field 12 (workload_type), VARINT 2 = POD
        &[0x88, 0x01, 0x01], // field 17 (status), VARINT 1 = UNHEALTHY
        &[0xa2, 0x01, 0x02], // field 20 (uid), LEN 2
        b"u1",
        &[0xb2, 0x01, 0x11], // field 22 (services map entry), LEN 17
        &[0x0a, 0x06],       //   field 1 (key), LEN 6
        b"ns/svc",
        &[0x12, 0x07],       //   field 2 (value: PortList), LEN 7
        &[0x0a, 0x05],       //     field 1 (ports: Port), LEN 5
        &[0x08, 0x50],       //       field 1 (service_port), VARINT 80
        &[0x10, 0x90, 0x3f], //       field 2 (target_port), VARINT 8080
        &[0xda, 0x01, 0x02], // field 27 (capacity: UInt32Value), LEN 2
        &[0x08, 0x03],       //   field 1 (value), VARINT 3
    ]);
    assert_wire(&workload, &expected);

    // Address wraps it in oneof field 1 (workload).
    let addr = Address {
        r#type: Some(address::Type::Workload(workload)),
    };
    let mut wrapped = vec![0x0a, expected.len() as u8]; // field 1 (workload), LEN
    wrapped.extend_from_slice(&expected);
    assert_wire(&addr, &wrapped);
}

#[test]
fn authorization() {
    let policy = Authorization {
        name: "allow".into(),
        namespace: "default".into(),
        scope: Scope::Namespace as i32,
        action: Action::Deny as i32,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match {
                    namespaces: vec![StringMatch {
                        match_type: Some(string_match::MatchType::Prefix("prod-".into())),
                    }],
                    principals: vec![StringMatch {
                        match_type: Some(string_match::MatchType::Exact(
                            "cluster.local/ns/default/sa/sleep".into(),
                        )),
                    }],
                    not_principals: vec![StringMatch {
                        match_type: Some(string_match::MatchType::Presence(())),
                    }],
                    source_ips: vec![api::security::Address {
                        address: vec![10, 0, 0, 0],
                        length: 8,
                    }],
                    destination_ports: vec![80, 443],
                    service_accounts: vec![ServiceAccountMatch {
                        namespace: "default".into(),
                        service_account: "sleep".into(),
                    }],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: true,
    };
    let expected = cat(&[
        &[0x0a, 0x05], // field 1 (name), LEN 5
        b"allow",
        &[0x12, 0x07], // field 2 (namespace), LEN 7
        b"default",
        &[0x18, 0x01], // field 3 (scope), VARINT 1 = NAMESPACE
        &[0x20, 0x01], // field 4 (action), VARINT 1 = DENY
        &[0x2a, 0x57], // field 5 (rules: Rule), LEN 87
        &[0x0a, 0x55], //   field 1 (clauses: Clause), LEN 85
        &[0x12, 0x53], //     field 2 (matches: Match), LEN 83
        &[0x0a, 0x07], //       field 1 (namespaces: StringMatch), LEN 7
        &[0x12, 0x05], //         field 2 (prefix), LEN 5
        b"prod-",
        &[0x1a, 0x23], //       field 3 (principals: StringMatch), LEN 35
        &[0x0a, 0x21], //         field 1 (exact), LEN 33
        b"cluster.local/ns/default/sa/sleep",
        &[0x22, 0x02], //       field 4 (not_principals: StringMatch), LEN 2
        &[0x22, 0x00], //         field 4 (presence: Empty), LEN 0
        &[0x2a, 0x08], //       field 5 (source_ips: Address), LEN 8
        &[0x0a, 0x04, 10, 0, 0, 0], //   field 1 (address), LEN 4
        &[0x10, 0x08], //         field 2 (length), VARINT 8
        &[0x4a, 0x03], //       field 9 (destination_ports, packed), LEN 3
        &[0x50, 0xbb, 0x03], //   VARINT 80, VARINT 443
        &[0x5a, 0x10], //       field 11 (service_accounts: ServiceAccountMatch), LEN 16
        &[0x0a, 0x07], //         field 1 (namespace), LEN 7
        b"default",
        &[0x12, 0x05], //         field 2 (serviceAccount), LEN 5
        b"sleep",
        &[0x30, 0x01], // field 6 (dry_run), VARINT 1
    ]);
    assert_wire(&policy, &expected);
}

/// The `Address` carried in the delta response below: a workload with uid "w1".
fn address_w1() -> (Address, Vec<u8>) {
    let addr = Address {
        r#type: Some(address::Type::Workload(Workload {
            uid: "w1".into(),
            ..Default::default()
        })),
    };
    let bytes = cat(&[
        &[0x0a, 0x05],       // field 1 (workload), LEN 5
        &[0xa2, 0x01, 0x02], //   field 20 (uid), LEN 2
        b"w1",
    ]);
    (addr, bytes)
}

#[test]
fn delta_discovery_response() {
    let (addr, addr_bytes) = address_w1();
    let response = DeltaDiscoveryResponse {
        system_version_info: "v1".into(),
        resources: vec![Resource {
            name: "w1".into(),
            aliases: vec!["a".into()],
            version: "7".into(),
            resource: Some(api::pack(&addr)),
            ttl: Some(Duration {
                seconds: 30,
                nanos: 0,
            }),
            ..Default::default()
        }],
        type_url: api::ADDRESS_TYPE_URL.into(),
        removed_resources: vec!["w0".into()],
        nonce: "n-1".into(),
        ..Default::default()
    };
    let expected = cat(&[
        &[0x0a, 0x02], // field 1 (system_version_info), LEN 2
        b"v1",
        &[0x12, 0x45], // field 2 (resources: Resource), LEN 69
        &[0x0a, 0x01], //   field 1 (version), LEN 1
        b"7",
        &[0x12, 0x35], //   field 2 (resource: Any), LEN 53
        &[0x0a, 0x2a], //     field 1 (type_url), LEN 42
        ADDRESS_URL,
        &[0x12, 0x07], //     field 2 (value), LEN 7
        &addr_bytes,
        &[0x1a, 0x02], //   field 3 (name), LEN 2
        b"w1",
        &[0x22, 0x01], //   field 4 (aliases), LEN 1
        b"a",
        &[0x32, 0x02], //   field 6 (ttl: Duration), LEN 2
        &[0x08, 0x1e], //     field 1 (seconds), VARINT 30
        &[0x22, 0x2a], // field 4 (type_url), LEN 42
        ADDRESS_URL,
        &[0x2a, 0x03], // field 5 (nonce), LEN 3
        b"n-1",
        &[0x32, 0x02], // field 6 (removed_resources), LEN 2
        b"w0",
    ]);
    assert_wire(&response, &expected);

    // The packed resource unpacks to the same Address.
    let decoded = DeltaDiscoveryResponse::decode(expected.as_slice()).unwrap();
    let any = decoded.resources[0].resource.as_ref().unwrap();
    assert_eq!(api::unpack::<Address>(any).unwrap(), addr);
}

#[test]
fn delta_discovery_request() {
    let request = DeltaDiscoveryRequest {
        node: Some(Node {
            id: "n".into(),
            metadata: Some(Struct {
                fields: [("NAMESPACE".to_string(), string_value("ns"))].into(),
            }),
            ..Default::default()
        }),
        type_url: api::ADDRESS_TYPE_URL.into(),
        resource_names_subscribe: vec!["*".into()],
        initial_resource_versions: HashMap::from([("w1".into(), "7".into())]),
        response_nonce: "n-1".into(),
        error_detail: Some(Status {
            code: 3,
            message: "bad".into(),
            details: vec![],
        }),
        ..Default::default()
    };
    let expected = cat(&[
        &[0x0a, 0x18], // field 1 (node: Node), LEN 24
        &[0x0a, 0x01], //   field 1 (id), LEN 1
        b"n",
        &[0x1a, 0x13], //   field 3 (metadata: Struct), LEN 19
        &[0x0a, 0x11], //     field 1 (fields map entry), LEN 17
        &[0x0a, 0x09], //       field 1 (key), LEN 9
        b"NAMESPACE",
        &[0x12, 0x04], //       field 2 (value: Value), LEN 4
        &[0x1a, 0x02], //         field 3 (string_value), LEN 2
        b"ns",
        &[0x12, 0x2a], // field 2 (type_url), LEN 42
        ADDRESS_URL,
        &[0x1a, 0x01], // field 3 (resource_names_subscribe), LEN 1
        b"*",
        &[0x2a, 0x07], // field 5 (initial_resource_versions entry), LEN 7
        &[0x0a, 0x02], //   field 1 (key), LEN 2
        b"w1",
        &[0x12, 0x01], //   field 2 (value), LEN 1
        b"7",
        &[0x32, 0x03], // field 6 (response_nonce), LEN 3
        b"n-1",
        &[0x3a, 0x07], // field 7 (error_detail: Status), LEN 7
        &[0x08, 0x03], //   field 1 (code), VARINT 3
        &[0x12, 0x03], //   field 2 (message), LEN 3
        b"bad",
    ]);
    assert_wire(&request, &expected);
}

#[test]
fn zds_requests() {
    let add = WorkloadRequest {
        payload: Some(workload_request::Payload::Add(AddWorkload {
            uid: "p1".into(),
            workload_info: Some(WorkloadInfo {
                name: "pod".into(),
                namespace: "ns".into(),
                service_account: "sa".into(),
            }),
        })),
    };
    let expected = cat(&[
        &[0x0a, 0x13], // field 1 (add: AddWorkload), LEN 19
        &[0x0a, 0x02], //   field 1 (uid), LEN 2
        b"p1",
        &[0x12, 0x0d], //   field 2 (workload_info: WorkloadInfo), LEN 13
        &[0x0a, 0x03], //     field 1 (name), LEN 3
        b"pod",
        &[0x12, 0x02], //     field 2 (namespace), LEN 2
        b"ns",
        &[0x1a, 0x02], //     field 3 (service_account), LEN 2
        b"sa",
    ]);
    assert_wire(&add, &expected);

    let keep = WorkloadRequest {
        payload: Some(workload_request::Payload::Keep(KeepWorkload {
            uid: "p1".into(),
        })),
    };
    // field 5 (keep: KeepWorkload), LEN 4 / field 1 (uid), LEN 2
    assert_wire(&keep, &cat(&[&[0x2a, 0x04, 0x0a, 0x02], b"p1"]));

    let del = WorkloadRequest {
        payload: Some(workload_request::Payload::Del(DelWorkload {
            uid: "p1".into(),
        })),
    };
    // field 2 (del: DelWorkload), LEN 4 / field 2 (uid), LEN 2
    assert_wire(&del, &cat(&[&[0x12, 0x04, 0x12, 0x02], b"p1"]));

    let snapshot = WorkloadRequest {
        payload: Some(workload_request::Payload::SnapshotSent(SnapshotSent {})),
    };
    // field 3 (snapshot_sent: SnapshotSent), LEN 0
    assert_wire(&snapshot, &[0x1a, 0x00]);
}

#[test]
fn zds_replies() {
    // field 1 (version), VARINT 1 = V1
    assert_wire(
        &ZdsHello {
            version: Version::V1 as i32,
        },
        &[0x08, 0x01],
    );

    let ok = WorkloadResponse {
        payload: Some(workload_response::Payload::Ack(Ack::default())),
    };
    // field 1 (ack: Ack), LEN 0
    assert_wire(&ok, &[0x0a, 0x00]);

    let failed = WorkloadResponse {
        payload: Some(workload_response::Payload::Ack(Ack {
            error: "no netns".into(),
        })),
    };
    // field 1 (ack: Ack), LEN 10 / field 1 (error), LEN 8
    assert_wire(&failed, &cat(&[&[0x0a, 0x0a, 0x0a, 0x08], b"no netns"]));
}

#[test]
fn certificate_request() {
    let request = IstioCertificateRequest {
        csr: "CSR".into(),
        validity_duration: 86_400,
        metadata: Some(Struct {
            fields: [(
                "ImpersonatedIdentity".to_string(),
                string_value("spiffe://td/ns/a/sa/b"),
            )]
            .into(),
        }),
    };
    let expected = cat(&[
        &[0x0a, 0x03], // field 1 (csr), LEN 3
        b"CSR",
        &[0x18, 0x80, 0xa3, 0x05], // field 3 (validity_duration), VARINT 86400
        &[0x22, 0x31],             // field 4 (metadata: Struct), LEN 49
        &[0x0a, 0x2f],             //   field 1 (fields map entry), LEN 47
        &[0x0a, 0x14],             //     field 1 (key), LEN 20
        b"ImpersonatedIdentity",
        &[0x12, 0x17], //     field 2 (value: Value), LEN 23
        &[0x1a, 0x15], //       field 3 (string_value), LEN 21
        b"spiffe://td/ns/a/sa/b",
    ]);
    assert_wire(&request, &expected);

    let response = api::ca::IstioCertificateResponse {
        cert_chain: vec!["leaf".into(), "root".into()],
    };
    // field 1 (cert_chain), LEN 4, twice: leaf first, root last
    assert_wire(
        &response,
        &cat(&[&[0x0a, 0x04], b"leaf", &[0x0a, 0x04], b"root"]),
    );
}

#[test]
fn unknown_fields_are_skipped() {
    // A newer peer may send fields we do not know: field 99 (LEN 1) must be
    // ignored, not rejected.
    let bytes = cat(&[&[0x0a, 0x02], b"w1", &[0x9a, 0x06, 0x01, 0x00]]);
    let got = api::zds::KeepWorkload::decode(bytes.as_slice()).unwrap();
    assert_eq!(got.uid, "w1");
}
