//! Workload API resources of namespace `shop`: pods backing the web service, and the
//! service itself. Shared by the state tests and the xDS client's integration test.

#![allow(dead_code)]

use std::net::IpAddr;

use api::workload::{self as wl, NetworkAddress, Port, PortList, address};

/// The web service's resource name.
pub const WEB: &str = "shop/web.shop.svc.cluster.local";

/// `s` as an address.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `s` as the workload API carries addresses: 4 or 16 bytes.
pub fn bytes(s: &str) -> Vec<u8> {
    match ip(s) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A pod `name` in `shop` on `node` at `addr`, backing the web service with `ports`.
pub fn pod(name: &str, node: &str, addr: &str, ports: &[(u32, u32)]) -> wl::Address {
    wl::Address {
        r#type: Some(address::Type::Workload(wl::Workload {
            uid: uid(name),
            name: name.into(),
            namespace: "shop".into(),
            addresses: vec![bytes(addr)],
            tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
            service_account: "web".into(),
            node: node.into(),
            services: [(
                WEB.to_string(),
                PortList {
                    ports: ports
                        .iter()
                        .map(|(s, t)| Port {
                            service_port: *s,
                            target_port: *t,
                        })
                        .collect(),
                },
            )]
            .into(),
            ..Default::default()
        })),
    }
}

/// The web service at 10.96.0.10 with `ports` (service port, target port).
pub fn web_service(ports: &[(u32, u32)]) -> wl::Address {
    wl::Address {
        r#type: Some(address::Type::Service(wl::Service {
            name: "web".into(),
            namespace: "shop".into(),
            hostname: "web.shop.svc.cluster.local".into(),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: bytes("10.96.0.10"),
            }],
            ports: ports
                .iter()
                .map(|(s, t)| Port {
                    service_port: *s,
                    target_port: *t,
                })
                .collect(),
            ..Default::default()
        })),
    }
}

/// The uid of pod `name` in `shop`.
pub fn uid(name: &str) -> String {
    format!("Kubernetes//Pod/shop/{name}")
}
