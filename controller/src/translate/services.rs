//! Kubernetes Services → `istio.workload.Service`, and the per-pod port maps
//! of the services selecting a pod.

use std::net::IpAddr;

use api::workload::{NetworkAddress, Port, PortList, Service};

use super::options::service_hostname;
use super::waypoints::{Asker, Waypoints};
use crate::model::{self, Index, IntOrString, Pod, Problem};

/// Translates every Service of the index.
pub(super) fn translate_services(
    index: &Index,
    waypoints: &Waypoints,
    problems: &mut Vec<Problem>,
) -> Vec<Service> {
    index
        .services()
        .map(|(origin, svc)| translate_service(index, origin, svc, waypoints, problems))
        .collect()
}

fn translate_service(
    index: &Index,
    origin: &str,
    svc: &model::Service,
    waypoints: &Waypoints,
    problems: &mut Vec<Problem>,
) -> Service {
    let m = &svc.metadata;
    let problem = |field: String, message: String| {
        Problem::new(origin, "Service", &m.namespace, &m.name)
            .field(field)
            .message(message)
    };
    let mut addresses = Vec::new();
    for (i, ip) in svc.spec.cluster_ip_list().iter().enumerate() {
        // Headless services have no VIP; clients resolve pod addresses.
        if ip.is_empty() || ip == "None" {
            continue;
        }
        match ip.parse::<IpAddr>() {
            Ok(addr) => addresses.push(NetworkAddress {
                network: String::new(),
                address: ip_bytes(addr),
            }),
            Err(_) => problems.push(problem(
                format!("spec.clusterIPs[{i}]"),
                format!("{ip:?} is not an IP address; address skipped"),
            )),
        }
    }
    let mut ports = Vec::new();
    for (i, p) in svc.spec.ports.iter().enumerate() {
        if p.port == 0 {
            problems.push(problem(
                format!("spec.ports[{i}].port"),
                "port 0 is not a valid port; port skipped".to_string(),
            ));
            continue;
        }
        let target_port = match &p.target_port {
            None => u32::from(p.port),
            Some(IntOrString::Int(n)) => match u16::try_from(*n) {
                Ok(n) if n > 0 => u32::from(n),
                _ => {
                    problems.push(problem(
                        format!("spec.ports[{i}].targetPort"),
                        format!("{n} is not a valid port; port skipped"),
                    ));
                    continue;
                }
            },
            // Named: resolved per pod, in the workloads' port maps.
            Some(IntOrString::String(_)) => 0,
        };
        ports.push(Port {
            service_port: u32::from(p.port),
            target_port,
        });
    }
    let waypoint = waypoints.for_object(index, origin, "Service", m, Asker::Service, problems);
    Service {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        hostname: service_hostname(&m.name, &m.namespace),
        addresses,
        ports,
        waypoint,
        ..Default::default()
    }
}

/// 4 bytes for IPv4, 16 for IPv6, as the workload API expects.
pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The address [`ip_bytes`] encoded, as text; `None` for any other length.
pub(crate) fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// The ports of `svc` as seen by `pod`: named target ports are looked up in
/// the pod's containers; a name the pod does not declare drops that port for
/// this pod (and is reported).
pub(super) fn ports_for_pod(
    origin: &str,
    svc: &model::Service,
    pod: &Pod,
    problems: &mut Vec<Problem>,
) -> PortList {
    let m = &svc.metadata;
    let mut ports = Vec::new();
    for (i, p) in svc.spec.ports.iter().enumerate() {
        if p.port == 0 {
            continue;
        }
        let target = match &p.target_port {
            None => Some(p.port),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|n| *n > 0),
            Some(IntOrString::String(name)) => {
                let found = pod
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter())
                    .find(|cp| &cp.name == name)
                    .map(|cp| cp.container_port);
                if found.is_none() {
                    problems.push(
                        Problem::new(origin, "Service", &m.namespace, &m.name)
                            .field(format!("spec.ports[{i}].targetPort"))
                            .message(format!(
                                "pod {} has no container port named {name:?}; port {} skipped for that pod",
                                pod.metadata.name, p.port
                            )),
                    );
                }
                found
            }
        };
        if let Some(target) = target {
            ports.push(Port {
                service_port: u32::from(p.port),
                target_port: u32::from(target),
            });
        }
    }
    PortList { ports }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_bytes() {
        for text in ["10.0.0.7", "fd00::1"] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(ip_text(&ip_bytes(ip)).as_deref(), Some(text));
        }
        assert_eq!(ip_text(&[10, 0, 0]), None);
    }
}
