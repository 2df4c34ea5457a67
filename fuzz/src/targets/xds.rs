//! xDS resources as ztunnel (and the waypoint, which shares its state) applies them: a
//! resource body is decoded and applied to a `ProxyState` that already holds the fixture
//! mesh, then the data path's lookups and L4 authorization run over the result.
//!
//! Oracles: a refused resource changes nothing; an accepted one under a name of its own
//! leaves the state as it was once removed again.

use std::net::{IpAddr, SocketAddr};

use api::security::Authorization;
use api::workload::{Address, address};
use prost::Message;
use proxy_core::state::{AuthzRequest, ProxyState};

use super::support::client_identity;
use crate::mesh::mesh;
use crate::mutate::Shape;
use crate::target::Target;

/// `istio.workload.Address` bodies.
pub const ADDRESS: Target = Target {
    name: "xds_address",
    run: xds_address,
    shape: Shape::Protobuf,
    dictionary: &[
        b"Kubernetes//Pod/shop/reviews-v1-1",
        b"shop/reviews.shop.svc.cluster.local",
        b"\x0a\x00\x00\x01",
        b"\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x0a",
        b"\xff\xff\xff\xff\x0f",
    ],
    max_len: 8 * 1024,
};

/// `istio.security.Authorization` bodies.
pub const AUTHORIZATION: Target = Target {
    name: "xds_authorization",
    run: xds_authorization,
    shape: Shape::Protobuf,
    dictionary: &[
        b"shop",
        b"istio-system",
        b"cluster.local/ns/shop/sa/productpage",
        b"*",
        b"spiffe://",
        b"\x0a\xf4\x00\x00",
        b"\xff\xff\xff\xff\x0f",
    ],
    max_len: 8 * 1024,
};

/// The name fuzzed resources are applied under; no fixture resource has it.
const FUZZ_NAME: &str = "fuzz/resource";

/// A state holding every resource the controller serves for the fixture mesh.
fn mesh_state() -> ProxyState {
    let state = ProxyState::new();
    for (name, address) in &mesh().addresses {
        state
            .apply_address(name, address.clone())
            .expect("the fixture's addresses apply");
    }
    for (name, policy) in &mesh().authorizations {
        state
            .apply_authorization(name, policy.clone())
            .expect("the fixture's policies apply");
    }
    state.mark_synced();
    state
}

/// The workload uid or service key `address` would be stored under.
fn address_key(address: &Address) -> Option<String> {
    match address.r#type.as_ref()? {
        address::Type::Workload(w) => Some(w.uid.clone()),
        address::Type::Service(s) => Some(format!("{}/{}", s.namespace, s.hostname)),
    }
}

/// Decodes and applies an `Address`, then looks everything up.
pub fn xds_address(data: &[u8]) {
    let Ok(address) = Address::decode(data) else {
        return;
    };
    let state = mesh_state();
    let before = state.config_dump();
    let applied = state.apply_address(FUZZ_NAME, address.clone()).is_ok();
    if !applied {
        assert_eq!(
            state.config_dump(),
            before,
            "a refused Address changed the state"
        );
    }
    exercise(&state, &address_ips(&address));
    state.remove_address(FUZZ_NAME);
    let key = address_key(&address);
    let shadows_fixture = mesh().addresses.iter().any(|(_, a)| address_key(a) == key);
    if !shadows_fixture {
        assert_eq!(
            state.config_dump(),
            before,
            "removing an Address did not undo it"
        );
    }
}

/// Decodes and applies an `Authorization`, then authorizes connections to every workload.
pub fn xds_authorization(data: &[u8]) {
    let Ok(policy) = Authorization::decode(data) else {
        return;
    };
    let state = mesh_state();
    let before = state.config_dump();
    let key = format!("{}/{}", policy.namespace, policy.name);
    let applied = state.apply_authorization(FUZZ_NAME, policy).is_ok();
    if !applied {
        assert_eq!(
            state.config_dump(),
            before,
            "a refused policy changed the state"
        );
    }
    exercise(&state, &[]);
    state.remove_authorization(FUZZ_NAME);
    let shadows_fixture = mesh()
        .authorizations
        .iter()
        .any(|(_, p)| format!("{}/{}", p.namespace, p.name) == key);
    if !shadows_fixture {
        assert_eq!(
            state.config_dump(),
            before,
            "removing a policy did not undo it"
        );
    }
}

/// Every IP an `Address` names (workload addresses, service VIPs), as far as it spells one.
fn address_ips(address: &Address) -> Vec<IpAddr> {
    let raw: Vec<&[u8]> = match &address.r#type {
        Some(address::Type::Workload(w)) => w.addresses.iter().map(|a| a.as_slice()).collect(),
        Some(address::Type::Service(s)) => {
            s.addresses.iter().map(|a| a.address.as_slice()).collect()
        }
        None => Vec::new(),
    };
    raw.into_iter()
        .filter_map(|b| match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
            _ => None,
        })
        .collect()
}

/// The lookups the data path makes: by IP, by VIP, endpoints of every service port, node
/// listings, L4 authorization of connections to every workload, and the config dump.
fn exercise(state: &ProxyState, extra_ips: &[IpAddr]) {
    let fixture_ips = ["10.244.1.10", "10.244.2.10", "10.96.0.10", "fd00::a"]
        .map(|ip| ip.parse::<IpAddr>().expect("a valid IP"));
    let callers = [
        Some(client_identity()),
        hbone::Identity::new("cluster.local", "blocked", "default").ok(),
        None,
    ];
    for &ip in fixture_ips.iter().chain(extra_ips) {
        if let Some(service) = state.service_by_vip(ip) {
            for port in service.ports.keys() {
                let _ = state.endpoints(&service, *port);
            }
            let _ = state.service_by_host(&service.namespace, &service.hostname);
        }
        let Some(workload) = state.workload_by_ip(ip) else {
            continue;
        };
        let _ = state.workload_by_uid(&workload.uid);
        let _ = state.workloads_on_node(&workload.node);
        for caller in &callers {
            for port in [8080, 9090, 15000] {
                let request = AuthzRequest {
                    source_identity: caller.as_ref(),
                    source_ip: SocketAddr::from(([10, 244, 3, 3], 0)).ip(),
                    destination: &workload,
                    destination_port: port,
                };
                let _ = state.authorize(&request);
            }
        }
    }
    let _ = serde_json::to_string(&state.config_dump()).expect("the dump serializes");
}
