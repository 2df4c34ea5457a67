//! Conversion of the workload API's `Address` resources into the proxy's model, validating
//! what the data path relies on, once, on arrival.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use api::workload::{self as xds, address, gateway_address};

use super::model::{Service, TunnelProtocol, WaypointRef, WaypointTarget, Workload};

/// Why a resource was refused. The message names the offending field, for the NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResource {
    /// A required field is empty.
    #[error("{0} is empty")]
    Empty(String),
    /// An IP address is not 4 or 16 bytes.
    #[error("{field} has {len} bytes; an IP address has 4 or 16")]
    Address {
        /// Which field.
        field: String,
        /// How many bytes it had.
        len: usize,
    },
    /// A CIDR prefix length exceeds the address's width.
    #[error("{field} has prefix length {length}, more than {max}")]
    PrefixLength {
        /// Which field.
        field: String,
        /// The prefix length.
        length: u32,
        /// The width of the address, in bits.
        max: u32,
    },
    /// A port number above 65535.
    #[error("{field} is {value}, not a port number")]
    Port {
        /// Which field.
        field: String,
        /// The value.
        value: u32,
    },
    /// An enum value this proxy does not know.
    #[error("{field} has unknown value {value}")]
    Enum {
        /// Which field.
        field: String,
        /// The value.
        value: i32,
    },
    /// A oneof with no variant set.
    #[error("{0} is not set")]
    Unset(String),
    /// The parts of the SPIFFE identity are not valid.
    #[error("identity: {0}")]
    Identity(#[from] hbone::IdentityError),
    /// The resource could not be decoded.
    #[error("decoding: {0}")]
    Decode(String),
}

/// A converted `Address`.
#[derive(Debug)]
pub(crate) enum Converted {
    /// A workload.
    Workload(Workload),
    /// A service.
    Service(Service),
}

/// Converts one `Address` resource.
pub(crate) fn address(resource: xds::Address) -> Result<Converted, InvalidResource> {
    match resource.r#type {
        Some(address::Type::Workload(w)) => workload(w).map(Converted::Workload),
        Some(address::Type::Service(s)) => service(s).map(Converted::Service),
        None => Err(InvalidResource::Unset("Address.type".into())),
    }
}

fn workload(w: xds::Workload) -> Result<Workload, InvalidResource> {
    non_empty(&w.uid, "Workload.uid")?;
    non_empty(&w.name, "Workload.name")?;
    non_empty(&w.namespace, "Workload.namespace")?;
    let addresses = w
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| ip(a, || format!("Workload.addresses[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let protocol = match xds::TunnelProtocol::try_from(w.tunnel_protocol) {
        Ok(xds::TunnelProtocol::Hbone) => TunnelProtocol::Hbone,
        Ok(xds::TunnelProtocol::None) => TunnelProtocol::Tcp,
        Err(_) => return Err(enum_error("Workload.tunnel_protocol", w.tunnel_protocol)),
    };
    let healthy = match xds::WorkloadStatus::try_from(w.status) {
        Ok(xds::WorkloadStatus::Healthy) => true,
        Ok(xds::WorkloadStatus::Unhealthy) => false,
        Err(_) => return Err(enum_error("Workload.status", w.status)),
    };
    let host_network = match xds::NetworkMode::try_from(w.network_mode) {
        Ok(xds::NetworkMode::Standard) => false,
        Ok(xds::NetworkMode::HostNetwork) => true,
        Err(_) => return Err(enum_error("Workload.network_mode", w.network_mode)),
    };
    let waypoint = w
        .waypoint
        .map(|g| gateway(g, "Workload.waypoint"))
        .transpose()?;
    let mut services = BTreeMap::new();
    for (key, list) in w.services {
        non_empty(&key, "Workload.services key")?;
        let mut ports = BTreeMap::new();
        for (i, p) in list.ports.iter().enumerate() {
            let field = |what: &str| format!("Workload.services[{key}].ports[{i}].{what}");
            ports.insert(
                port(p.service_port, || field("service_port"))?,
                port(p.target_port, || field("target_port"))?,
            );
        }
        services.insert(key, ports);
    }
    let mut authorization_policies = w.authorization_policies;
    authorization_policies.sort();
    authorization_policies.dedup();
    let converted = Workload {
        uid: w.uid,
        name: w.name,
        namespace: w.namespace,
        addresses,
        protocol,
        trust_domain: w.trust_domain,
        service_account: w.service_account,
        node: w.node,
        waypoint,
        canonical_name: w.canonical_name,
        canonical_revision: w.canonical_revision,
        workload_name: w.workload_name,
        cluster_id: w.cluster_id,
        healthy,
        services,
        authorization_policies,
        host_network,
    };
    // Refuse now what would otherwise fail on every connection to or from it.
    converted.try_identity()?;
    Ok(converted)
}

fn service(s: xds::Service) -> Result<Service, InvalidResource> {
    non_empty(&s.name, "Service.name")?;
    non_empty(&s.namespace, "Service.namespace")?;
    non_empty(&s.hostname, "Service.hostname")?;
    let vips = s
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| ip(&a.address, || format!("Service.addresses[{i}].address")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = BTreeMap::new();
    for (i, p) in s.ports.iter().enumerate() {
        ports.insert(
            port(p.service_port, || {
                format!("Service.ports[{i}].service_port")
            })?,
            port(p.target_port, || format!("Service.ports[{i}].target_port"))?,
        );
    }
    let waypoint = s
        .waypoint
        .map(|g| gateway(g, "Service.waypoint"))
        .transpose()?;
    Ok(Service {
        name: s.name,
        namespace: s.namespace,
        hostname: s.hostname,
        vips,
        ports,
        subject_alt_names: s.subject_alt_names,
        waypoint,
    })
}

fn gateway(g: xds::GatewayAddress, field: &str) -> Result<WaypointRef, InvalidResource> {
    let target = match g.destination {
        Some(gateway_address::Destination::Hostname(h)) => {
            non_empty(&h.namespace, &format!("{field}.hostname.namespace"))?;
            non_empty(&h.hostname, &format!("{field}.hostname.hostname"))?;
            WaypointTarget::Hostname {
                namespace: h.namespace,
                hostname: h.hostname,
            }
        }
        Some(gateway_address::Destination::Address(a)) => {
            WaypointTarget::Address(ip(&a.address, || format!("{field}.address.address"))?)
        }
        None => return Err(InvalidResource::Unset(format!("{field}.destination"))),
    };
    Ok(WaypointRef {
        target,
        hbone_port: port(g.hbone_mtls_port, || format!("{field}.hbone_mtls_port"))?,
    })
}

fn non_empty(value: &str, field: &str) -> Result<(), InvalidResource> {
    if value.is_empty() {
        Err(InvalidResource::Empty(field.to_owned()))
    } else {
        Ok(())
    }
}

fn enum_error(field: &str, value: i32) -> InvalidResource {
    InvalidResource::Enum {
        field: field.to_owned(),
        value,
    }
}

/// An IP address from its 4 or 16 raw bytes.
pub(crate) fn ip(bytes: &[u8], field: impl FnOnce() -> String) -> Result<IpAddr, InvalidResource> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Ok(IpAddr::V4(Ipv4Addr::from(v4)))
    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        Ok(IpAddr::V6(Ipv6Addr::from(v6)))
    } else {
        Err(InvalidResource::Address {
            field: field(),
            len: bytes.len(),
        })
    }
}

/// A port number carried in a `uint32`.
pub(crate) fn port(value: u32, field: impl FnOnce() -> String) -> Result<u16, InvalidResource> {
    u16::try_from(value).map_err(|_| InvalidResource::Port {
        field: field(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::workload::{
        GatewayAddress, NamespacedHostname, NetworkAddress, Port, PortList, WorkloadStatus,
    };

    fn valid_workload() -> xds::Workload {
        xds::Workload {
            uid: "Kubernetes//Pod/shop/web-1".into(),
            name: "web-1".into(),
            namespace: "shop".into(),
            addresses: vec![vec![10, 0, 0, 1], Ipv6Addr::LOCALHOST.octets().to_vec()],
            tunnel_protocol: xds::TunnelProtocol::Hbone as i32,
            trust_domain: "cluster.local".into(),
            service_account: "web".into(),
            node: "node1".into(),
            waypoint: Some(GatewayAddress {
                destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
                    namespace: "shop".into(),
                    hostname: "waypoint.shop.svc.cluster.local".into(),
                })),
                hbone_mtls_port: 15008,
            }),
            services: [(
                "shop/web.shop.svc.cluster.local".to_string(),
                PortList {
                    ports: vec![Port {
                        service_port: 80,
                        target_port: 8080,
                    }],
                },
            )]
            .into(),
            authorization_policies: vec!["shop/b".into(), "shop/a".into(), "shop/b".into()],
            status: WorkloadStatus::Unhealthy as i32,
            ..Default::default()
        }
    }

    fn as_workload(w: xds::Workload) -> Result<Workload, InvalidResource> {
        match address(xds::Address {
            r#type: Some(address::Type::Workload(w)),
        })? {
            Converted::Workload(w) => Ok(w),
            Converted::Service(_) => panic!("expected a workload"),
        }
    }

    fn as_service(s: xds::Service) -> Result<Service, InvalidResource> {
        match address(xds::Address {
            r#type: Some(address::Type::Service(s)),
        })? {
            Converted::Service(s) => Ok(s),
            Converted::Workload(_) => panic!("expected a service"),
        }
    }

    #[test]
    fn converts_a_workload() {
        let w = as_workload(valid_workload()).unwrap();
        assert_eq!(w.uid, "Kubernetes//Pod/shop/web-1");
        assert_eq!(
            w.addresses,
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(w.protocol, TunnelProtocol::Hbone);
        assert!(!w.healthy);
        assert!(!w.host_network);
        assert_eq!(
            w.services["shop/web.shop.svc.cluster.local"],
            BTreeMap::from([(80, 8080)])
        );
        assert_eq!(w.authorization_policies, ["shop/a", "shop/b"]);
        assert_eq!(
            w.waypoint,
            Some(WaypointRef {
                target: WaypointTarget::Hostname {
                    namespace: "shop".into(),
                    hostname: "waypoint.shop.svc.cluster.local".into()
                },
                hbone_port: 15008
            })
        );
        assert_eq!(
            w.identity().to_string(),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
    }

    #[test]
    fn converts_a_service() {
        let s = as_service(xds::Service {
            name: "web".into(),
            namespace: "shop".into(),
            hostname: "web.shop.svc.cluster.local".into(),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 10],
            }],
            ports: vec![
                Port {
                    service_port: 80,
                    target_port: 0,
                },
                Port {
                    service_port: 443,
                    target_port: 8443,
                },
            ],
            subject_alt_names: vec!["spiffe://cluster.local/ns/shop/sa/web".into()],
            waypoint: Some(GatewayAddress {
                destination: Some(gateway_address::Destination::Address(NetworkAddress {
                    network: String::new(),
                    address: vec![10, 96, 0, 99],
                })),
                hbone_mtls_port: 15008,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.key(), "shop/web.shop.svc.cluster.local");
        assert_eq!(s.vips, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(s.ports, BTreeMap::from([(80, 0), (443, 8443)]));
        assert_eq!(
            s.waypoint.unwrap().target,
            WaypointTarget::Address("10.96.0.99".parse().unwrap())
        );
    }

    #[test]
    fn refuses_invalid_workloads() {
        type Edit = fn(&mut xds::Workload);
        let cases: &[(&str, Edit)] = &[
            ("Workload.uid is empty", |w| w.uid.clear()),
            ("Workload.name is empty", |w| w.name.clear()),
            ("Workload.namespace is empty", |w| w.namespace.clear()),
            ("Workload.addresses[1] has 3 bytes", |w| {
                w.addresses[1] = vec![1, 2, 3]
            }),
            ("Workload.tunnel_protocol has unknown value 7", |w| {
                w.tunnel_protocol = 7
            }),
            ("Workload.status has unknown value 9", |w| w.status = 9),
            ("target_port is 70000", |w| {
                w.services
                    .values_mut()
                    .for_each(|l| l.ports[0].target_port = 70000)
            }),
            ("Workload.waypoint.destination is not set", |w| {
                w.waypoint.as_mut().unwrap().destination = None
            }),
            ("Workload.waypoint.hbone_mtls_port is 65536", |w| {
                w.waypoint.as_mut().unwrap().hbone_mtls_port = 65536
            }),
            ("identity", |w| w.service_account = "Not_Valid".into()),
        ];
        for (expected, edit) in cases {
            let mut w = valid_workload();
            edit(&mut w);
            let err = as_workload(w).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn refuses_invalid_services_and_empty_addresses() {
        let err = as_service(xds::Service {
            name: "web".into(),
            namespace: "shop".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "Service.hostname is empty");
        let err = as_service(xds::Service {
            name: "web".into(),
            namespace: "shop".into(),
            hostname: "web.shop.svc.cluster.local".into(),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: vec![],
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("has 0 bytes"), "{err}");
        let err = address(xds::Address { r#type: None }).unwrap_err();
        assert_eq!(err.to_string(), "Address.type is not set");
    }

    #[test]
    fn host_network_and_defaults() {
        let mut w = valid_workload();
        w.network_mode = xds::NetworkMode::HostNetwork as i32;
        w.trust_domain.clear();
        w.service_account.clear();
        w.tunnel_protocol = xds::TunnelProtocol::None as i32;
        w.status = WorkloadStatus::Healthy as i32;
        let w = as_workload(w).unwrap();
        assert!(w.host_network && w.healthy);
        assert_eq!(w.protocol, TunnelProtocol::Tcp);
        assert_eq!(
            w.identity().to_string(),
            "spiffe://cluster.local/ns/shop/sa/default"
        );
    }
}
