//! Where an outbound connection goes: from its original destination to a plan (HBONE to a
//! peer ztunnel or waypoint, plain TCP to an un-meshed workload, or passthrough).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hbone::Identity;

use proxy_core::state::{
    Endpoint, ProxyState, Service, TunnelProtocol, WaypointRef, WaypointTarget, Workload,
};

/// The lookups resolution needs; [`ProxyState`] is the real one.
pub trait Directory {
    /// The workload owning `ip`.
    fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>>;
    /// The service with virtual IP `ip`.
    fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>>;
    /// The service `hostname` in `namespace`.
    fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>>;
    /// Healthy endpoints of `service` for service port `port`.
    fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint>;
}

impl Directory for ProxyState {
    fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        ProxyState::workload_by_ip(self, ip)
    }
    fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        ProxyState::service_by_vip(self, ip)
    }
    fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>> {
        ProxyState::service_by_host(self, namespace, hostname)
    }
    fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint> {
        ProxyState::endpoints(self, service, port)
    }
}

/// Why a destination cannot be reached.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The service has no healthy endpoint for the port.
    #[error("no healthy endpoint of {service} for port {port}")]
    NoHealthyEndpoint {
        /// `namespace/hostname`.
        service: String,
        /// The service port asked for.
        port: u16,
    },
    /// The destination's waypoint is unknown or has no healthy instance.
    #[error("waypoint {0} has no healthy instance")]
    NoWaypoint(String),
    /// A workload's identity cannot be formed from its fields.
    #[error("workload {uid} has no valid identity: {reason}")]
    Identity {
        /// The workload.
        uid: String,
        /// Why.
        reason: String,
    },
}

impl ResolveError {
    /// The response flag this failure is reported with ("UH": no healthy upstream).
    pub fn response_flag(&self) -> &'static str {
        "UH"
    }
}

/// How the connection leaves the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// An HBONE tunnel through the peer at `address` (its port 15008).
    Hbone {
        /// The peer ztunnel's or waypoint's HBONE address.
        address: SocketAddr,
        /// The `:authority` of the CONNECT.
        authority: SocketAddr,
        /// Identities the peer may present.
        identities: Vec<Identity>,
    },
    /// Plain TCP to `address`.
    Tcp {
        /// Where to connect.
        address: SocketAddr,
    },
}

/// A resolved destination.
#[derive(Clone, Debug)]
pub struct Plan {
    /// How to get there.
    pub hop: Hop,
    /// The workload connected to (the waypoint's, when going through one), if known.
    pub workload: Option<Arc<Workload>>,
    /// The service addressed, if any.
    pub service: Option<Arc<Service>>,
    /// Whether the hop is a waypoint.
    pub via_waypoint: bool,
}

impl Plan {
    /// Whether the connection is carried over mutual TLS.
    pub fn is_mtls(&self) -> bool {
        matches!(self.hop, Hop::Hbone { .. })
    }
}

/// The identity of `workload`.
pub fn workload_identity(workload: &Workload) -> Result<Identity, ResolveError> {
    workload.try_identity().map_err(|e| ResolveError::Identity {
        uid: workload.uid.clone(),
        reason: e.to_string(),
    })
}

/// Decides where a connection from `source` to `destination` goes, as Istio's ztunnel
/// does: a service VIP goes to the service's waypoint, or else to one healthy endpoint
/// picked at random; a known workload's IP goes to its waypoint, or else to the workload;
/// HBONE workloads are reached through their ztunnel on 15008, others over plain TCP;
/// anything else passes through untouched.
pub fn resolve(
    directory: &impl Directory,
    source: Option<&Workload>,
    destination: SocketAddr,
) -> Result<Plan, ResolveError> {
    if let Some(service) = directory.service_by_vip(destination.ip()) {
        if let Some(waypoint) = &service.waypoint
            && let Some(plan) = through_waypoint(directory, source, waypoint, destination)?
        {
            return Ok(Plan {
                service: Some(service),
                ..plan
            });
        }
        let endpoints = directory.endpoints(&service, destination.port());
        let Some(endpoint) = pick(&endpoints) else {
            return Err(ResolveError::NoHealthyEndpoint {
                service: service.key(),
                port: destination.port(),
            });
        };
        let ip = address_of(&endpoint.workload, destination.ip());
        let target = SocketAddr::new(ip, endpoint.port);
        let hop = direct_hop(&endpoint.workload, target, &service.subject_alt_names)?;
        return Ok(Plan {
            hop,
            workload: Some(endpoint.workload.clone()),
            service: Some(service),
            via_waypoint: false,
        });
    }
    if let Some(workload) = directory.workload_by_ip(destination.ip()) {
        if let Some(waypoint) = &workload.waypoint
            && let Some(plan) = through_waypoint(directory, source, waypoint, destination)?
        {
            return Ok(plan);
        }
        let hop = direct_hop(&workload, destination, &[])?;
        return Ok(Plan {
            hop,
            workload: Some(workload),
            service: None,
            via_waypoint: false,
        });
    }
    Ok(Plan {
        hop: Hop::Tcp {
            address: destination,
        },
        workload: None,
        service: None,
        via_waypoint: false,
    })
}

/// Straight to the workload: HBONE to its ztunnel if it is captured, else plain TCP.
fn direct_hop(
    workload: &Workload,
    target: SocketAddr,
    extra_sans: &[String],
) -> Result<Hop, ResolveError> {
    Ok(match workload.protocol {
        TunnelProtocol::Hbone => {
            let mut identities = vec![workload_identity(workload)?];
            // A malformed SAN cannot match any peer: ignoring it loses nothing.
            identities.extend(extra_sans.iter().filter_map(|s| s.parse().ok()));
            identities.sort();
            identities.dedup();
            Hop::Hbone {
                address: SocketAddr::new(target.ip(), hbone::HBONE_PORT),
                authority: target,
                identities,
            }
        }
        TunnelProtocol::Tcp => Hop::Tcp { address: target },
    })
}

/// Through `waypoint`, unless the source is that waypoint itself (its own traffic must
/// leave towards the destination, not loop back). `None` means: go direct.
fn through_waypoint(
    directory: &impl Directory,
    source: Option<&Workload>,
    waypoint: &WaypointRef,
    destination: SocketAddr,
) -> Result<Option<Plan>, ResolveError> {
    let instances = waypoint_instances(directory, waypoint);
    if let Some(source) = source
        && instances.iter().any(|w| w.uid == source.uid)
    {
        return Ok(None);
    }
    let healthy: Vec<Arc<Workload>> = instances.into_iter().filter(|w| w.healthy).collect();
    let Some(instance) = pick(&healthy) else {
        return Err(ResolveError::NoWaypoint(describe(&waypoint.target)));
    };
    let ip = address_of(instance, destination.ip());
    Ok(Some(Plan {
        hop: Hop::Hbone {
            address: SocketAddr::new(ip, waypoint.hbone_port),
            authority: destination,
            identities: vec![workload_identity(instance)?],
        },
        workload: Some(instance.clone()),
        service: None,
        via_waypoint: true,
    }))
}

/// True when the HBONE peer (`identity` at `ip`) is an instance of a waypoint serving
/// `destination`: its own waypoint or one of its services'. Istio then trusts the tunnel's
/// `forwarded` header to name the original client.
pub fn is_waypoint_of(
    directory: &impl Directory,
    destination: &Workload,
    identity: &Identity,
    ip: IpAddr,
) -> bool {
    let service_waypoints = destination.services.keys().filter_map(|key| {
        let (namespace, hostname) = key.split_once('/')?;
        directory
            .service_by_host(namespace, hostname)?
            .waypoint
            .clone()
    });
    destination
        .waypoint
        .clone()
        .into_iter()
        .chain(service_waypoints)
        .any(|waypoint| {
            waypoint_instances(directory, &waypoint).iter().any(|w| {
                w.addresses.contains(&ip) && workload_identity(w).is_ok_and(|id| &id == identity)
            })
        })
}

/// The workloads implementing a waypoint: its service's endpoints (on the HBONE port, or
/// on any port the service declares), or the workload the address names.
fn waypoint_instances(directory: &impl Directory, waypoint: &WaypointRef) -> Vec<Arc<Workload>> {
    let service = match &waypoint.target {
        WaypointTarget::Address(ip) => directory.service_by_vip(*ip),
        WaypointTarget::Hostname {
            namespace,
            hostname,
        } => directory.service_by_host(namespace, hostname),
    };
    if let Some(service) = service {
        let mut ports = vec![waypoint.hbone_port];
        ports.extend(service.ports.keys().copied());
        for port in ports {
            let endpoints = directory.endpoints(&service, port);
            if !endpoints.is_empty() {
                return endpoints.into_iter().map(|e| e.workload).collect();
            }
        }
        return Vec::new();
    }
    match &waypoint.target {
        WaypointTarget::Address(ip) => directory.workload_by_ip(*ip).into_iter().collect(),
        WaypointTarget::Hostname { .. } => Vec::new(),
    }
}

fn describe(target: &WaypointTarget) -> String {
    match target {
        WaypointTarget::Address(ip) => ip.to_string(),
        WaypointTarget::Hostname {
            namespace,
            hostname,
        } => format!("{namespace}/{hostname}"),
    }
}

/// The workload's address in the same family as `like`, else its first.
fn address_of(workload: &Workload, like: IpAddr) -> IpAddr {
    workload
        .addresses
        .iter()
        .find(|a| a.is_ipv4() == like.is_ipv4())
        .or_else(|| workload.addresses.first())
        .copied()
        .unwrap_or(like)
}

fn pick<T>(items: &[T]) -> Option<&T> {
    if items.is_empty() {
        None
    } else {
        items.get(fastrand::usize(..items.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    #[derive(Default)]
    struct Fake {
        workloads: Vec<Arc<Workload>>,
        services: Vec<Arc<Service>>,
    }

    impl Directory for Fake {
        fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
            self.workloads
                .iter()
                .find(|w| w.addresses.contains(&ip))
                .cloned()
        }
        fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
            self.services.iter().find(|s| s.vips.contains(&ip)).cloned()
        }
        fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>> {
            self.services
                .iter()
                .find(|s| s.namespace == namespace && s.hostname == hostname)
                .cloned()
        }
        fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint> {
            self.workloads
                .iter()
                .filter(|w| w.healthy)
                .filter_map(|w| {
                    let target = w.services.get(&service.key())?.get(&port)?;
                    Some(Endpoint {
                        workload: w.clone(),
                        port: *target,
                    })
                })
                .collect()
        }
    }

    fn workload(name: &str, ip: &str, protocol: TunnelProtocol) -> Workload {
        Workload {
            uid: format!("Kubernetes//Pod/shop/{name}"),
            name: name.into(),
            namespace: "shop".into(),
            addresses: vec![ip.parse().unwrap()],
            protocol,
            trust_domain: "cluster.local".into(),
            service_account: name.into(),
            node: "node1".into(),
            waypoint: None,
            canonical_name: name.into(),
            canonical_revision: "v1".into(),
            workload_name: name.into(),
            cluster_id: "Kubernetes".into(),
            healthy: true,
            ..Workload::default()
        }
    }

    fn service(name: &str, vip: &str, ports: &[(u16, u16)]) -> Service {
        Service {
            name: name.into(),
            namespace: "shop".into(),
            hostname: format!("{name}.shop.svc.cluster.local"),
            vips: vec![vip.parse().unwrap()],
            ports: ports.iter().copied().collect(),
            ..Service::default()
        }
    }

    fn serve(w: &mut Workload, s: &Service, ports: &[(u16, u16)]) {
        w.services
            .insert(s.key(), ports.iter().copied().collect::<BTreeMap<_, _>>());
    }

    fn id(sa: &str) -> Identity {
        format!("spiffe://cluster.local/ns/shop/sa/{sa}")
            .parse()
            .unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn unknown_destinations_pass_through() {
        let plan = resolve(&Fake::default(), None, addr("1.2.3.4:443")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Tcp {
                address: addr("1.2.3.4:443")
            }
        );
        assert!(plan.workload.is_none() && plan.service.is_none() && !plan.is_mtls());
    }

    #[test]
    fn a_service_goes_to_an_endpoint_over_hbone_with_the_target_port() {
        let mut svc = service("cart", "10.96.0.10", &[(80, 8080)]);
        svc.subject_alt_names = vec!["spiffe://cluster.local/ns/shop/sa/legacy".into()];
        let mut w = workload("cart", "10.244.1.5", TunnelProtocol::Hbone);
        serve(&mut w, &svc, &[(80, 8080)]);
        let fake = Fake {
            workloads: vec![Arc::new(w)],
            services: vec![Arc::new(svc)],
        };
        let plan = resolve(&fake, None, addr("10.96.0.10:80")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Hbone {
                address: addr("10.244.1.5:15008"),
                authority: addr("10.244.1.5:8080"),
                identities: vec![id("cart"), id("legacy")],
            }
        );
        assert_eq!(plan.service.unwrap().name, "cart");
        assert_eq!(plan.workload.unwrap().name, "cart");
        assert!(!plan.via_waypoint);
    }

    #[test]
    fn a_plain_endpoint_gets_plain_tcp() {
        let svc = service("db", "10.96.0.11", &[(5432, 5432)]);
        let mut w = workload("db", "10.244.2.9", TunnelProtocol::Tcp);
        serve(&mut w, &svc, &[(5432, 5432)]);
        let fake = Fake {
            workloads: vec![Arc::new(w)],
            services: vec![Arc::new(svc)],
        };
        let plan = resolve(&fake, None, addr("10.96.0.11:5432")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Tcp {
                address: addr("10.244.2.9:5432")
            }
        );
    }

    #[test]
    fn no_healthy_endpoint_is_an_error() {
        let svc = service("cart", "10.96.0.10", &[(80, 8080)]);
        let mut w = workload("cart", "10.244.1.5", TunnelProtocol::Hbone);
        w.healthy = false;
        serve(&mut w, &svc, &[(80, 8080)]);
        let fake = Fake {
            workloads: vec![Arc::new(w)],
            services: vec![Arc::new(svc)],
        };
        let err = resolve(&fake, None, addr("10.96.0.10:80")).unwrap_err();
        assert_eq!(err.response_flag(), "UH");
        assert!(matches!(
            err,
            ResolveError::NoHealthyEndpoint { port: 80, .. }
        ));
        // A port the service does not have has no endpoint either.
        assert!(resolve(&fake, None, addr("10.96.0.10:81")).is_err());
    }

    #[test]
    fn endpoints_are_spread() {
        let svc = service("cart", "10.96.0.10", &[(80, 8080)]);
        let mut workloads = Vec::new();
        for i in 1..=3 {
            let mut w = workload(
                &format!("cart-{i}"),
                &format!("10.244.1.{i}"),
                TunnelProtocol::Tcp,
            );
            serve(&mut w, &svc, &[(80, 8080)]);
            workloads.push(Arc::new(w));
        }
        let fake = Fake {
            workloads,
            services: vec![Arc::new(svc)],
        };
        let mut seen = HashMap::new();
        for _ in 0..300 {
            let plan = resolve(&fake, None, addr("10.96.0.10:80")).unwrap();
            *seen.entry(plan.workload.unwrap().name.clone()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 3);
    }

    fn waypoint_setup() -> (Fake, Arc<Workload>) {
        let wp_svc = service("waypoint", "10.96.0.99", &[(15008, 15008)]);
        let mut wp = workload("waypoint", "10.244.3.3", TunnelProtocol::Tcp);
        serve(&mut wp, &wp_svc, &[(15008, 15008)]);
        let wp = Arc::new(wp);
        let reference = WaypointRef {
            target: WaypointTarget::Hostname {
                namespace: "shop".into(),
                hostname: wp_svc.hostname.clone(),
            },
            hbone_port: 15008,
        };
        let mut svc = service("cart", "10.96.0.10", &[(80, 8080)]);
        svc.waypoint = Some(reference.clone());
        let mut cart = workload("cart", "10.244.1.5", TunnelProtocol::Hbone);
        serve(&mut cart, &svc, &[(80, 8080)]);
        let mut pod = workload("pod", "10.244.1.6", TunnelProtocol::Hbone);
        pod.waypoint = Some(WaypointRef {
            target: WaypointTarget::Address("10.96.0.99".parse().unwrap()),
            hbone_port: 15008,
        });
        let fake = Fake {
            workloads: vec![Arc::new(cart), Arc::new(pod), wp.clone()],
            services: vec![Arc::new(svc), Arc::new(wp_svc)],
        };
        (fake, wp)
    }

    #[test]
    fn a_service_with_a_waypoint_goes_through_it_with_the_vip_as_authority() {
        let (fake, _) = waypoint_setup();
        let plan = resolve(&fake, None, addr("10.96.0.10:80")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Hbone {
                address: addr("10.244.3.3:15008"),
                authority: addr("10.96.0.10:80"),
                identities: vec![id("waypoint")],
            }
        );
        assert!(plan.via_waypoint);
        assert_eq!(plan.service.unwrap().name, "cart");
        assert_eq!(plan.workload.unwrap().name, "waypoint");
    }

    #[test]
    fn a_workload_with_a_waypoint_goes_through_it() {
        let (fake, _) = waypoint_setup();
        let plan = resolve(&fake, None, addr("10.244.1.6:9000")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Hbone {
                address: addr("10.244.3.3:15008"),
                authority: addr("10.244.1.6:9000"),
                identities: vec![id("waypoint")],
            }
        );
    }

    #[test]
    fn the_waypoint_itself_goes_direct() {
        let (fake, wp) = waypoint_setup();
        let plan = resolve(&fake, Some(&wp), addr("10.96.0.10:80")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Hbone {
                address: addr("10.244.1.5:15008"),
                authority: addr("10.244.1.5:8080"),
                identities: vec![id("cart")],
            }
        );
    }

    #[test]
    fn only_the_destinations_own_waypoint_may_name_the_original_client() {
        let (fake, _) = waypoint_setup();
        let by_name = |name: &str| {
            fake.workloads
                .iter()
                .find(|w| w.name == name)
                .unwrap()
                .clone()
        };
        let (cart, pod) = (by_name("cart"), by_name("pod"));
        let wp_ip: IpAddr = "10.244.3.3".parse().unwrap();
        // Through a service's waypoint and through the workload's own.
        assert!(is_waypoint_of(&fake, &cart, &id("waypoint"), wp_ip));
        assert!(is_waypoint_of(&fake, &pod, &id("waypoint"), wp_ip));
        // The waypoint's identity from another address, or another identity from the
        // waypoint's address, is not the waypoint.
        let elsewhere: IpAddr = "10.244.9.9".parse().unwrap();
        assert!(!is_waypoint_of(&fake, &cart, &id("waypoint"), elsewhere));
        assert!(!is_waypoint_of(&fake, &cart, &id("pod"), wp_ip));
        // A workload without a waypoint trusts no one's forwarded header.
        let waypoint = by_name("waypoint");
        assert!(!is_waypoint_of(&fake, &waypoint, &id("waypoint"), wp_ip));
    }

    #[test]
    fn a_missing_waypoint_fails_closed() {
        let (mut fake, _) = waypoint_setup();
        fake.workloads.retain(|w| w.name != "waypoint");
        let err = resolve(&fake, None, addr("10.96.0.10:80")).unwrap_err();
        assert!(matches!(err, ResolveError::NoWaypoint(_)));
    }

    #[test]
    fn a_pod_ip_of_a_plain_workload_is_tcp_and_of_a_captured_one_hbone() {
        let fake = Fake {
            workloads: vec![
                Arc::new(workload("a", "10.244.1.7", TunnelProtocol::Tcp)),
                Arc::new(workload("b", "10.244.1.8", TunnelProtocol::Hbone)),
            ],
            services: vec![],
        };
        let plan = resolve(&fake, None, addr("10.244.1.7:80")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Tcp {
                address: addr("10.244.1.7:80")
            }
        );
        assert_eq!(plan.workload.unwrap().name, "a");
        let plan = resolve(&fake, None, addr("10.244.1.8:80")).unwrap();
        assert_eq!(
            plan.hop,
            Hop::Hbone {
                address: addr("10.244.1.8:15008"),
                authority: addr("10.244.1.8:80"),
                identities: vec![id("b")],
            }
        );
    }
}
