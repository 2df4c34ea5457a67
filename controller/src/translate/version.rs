//! Deterministic encoding and versions of resources.
//!
//! prost encodes map fields in HashMap order, which differs from run to run.
//! A workload (the one message with a map) is therefore encoded without its
//! map, followed by the map entries sorted by key: protobuf parsers merge
//! concatenated encodings, so the bytes decode to the same message, and equal
//! content always gives equal bytes and an equal version.

use api::prost::Message;
use api::prost_types::Any;
use api::workload::{Address, PortList, Workload, address};

/// One `map<string, PortList>` entry as it goes on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct ServicesEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<PortList>,
}

/// `Address { workload: Workload { services: ... } }`, map entries only.
#[derive(Clone, PartialEq, prost::Message)]
struct WorkloadServices {
    #[prost(message, repeated, tag = "22")]
    entries: Vec<ServicesEntry>,
}

/// `Address { workload: ... }` wrapping pre-encoded workload bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct AddressOfWorkload {
    #[prost(bytes = "vec", tag = "1")]
    workload: Vec<u8>,
}

/// 64-bit FNV-1a: tiny, stable across Rust releases (unlike `DefaultHasher`)
/// and good enough to tell versions of one resource apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Version (hex content hash) of encoded bytes.
pub(super) fn version(bytes: &[u8]) -> String {
    format!("{:016x}", fnv1a(bytes))
}

/// `workload` packed as an `istio.workload.Address`, with deterministic bytes.
pub(super) fn pack_workload(workload: &Workload) -> Any {
    let mut rest = workload.clone();
    let mut entries: Vec<ServicesEntry> = std::mem::take(&mut rest.services)
        .into_iter()
        .map(|(key, value)| ServicesEntry {
            key,
            value: Some(value),
        })
        .collect();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    let mut bytes = rest.encode_to_vec();
    bytes.extend(WorkloadServices { entries }.encode_to_vec());
    let address = AddressOfWorkload { workload: bytes };
    Any {
        type_url: api::ADDRESS_TYPE_URL.to_string(),
        value: address.encode_to_vec(),
    }
}

/// `address` packed; only for addresses without map fields (services).
pub(super) fn pack_address(address: &Address) -> Any {
    debug_assert!(!matches!(address.r#type, Some(address::Type::Workload(_))));
    api::pack(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::workload::Port;

    #[test]
    fn workload_bytes_decode_back_and_are_stable() {
        let mut w = Workload {
            uid: "Kubernetes//Pod/ns/p".into(),
            ..Default::default()
        };
        for i in 0..20u32 {
            w.services.insert(
                format!("ns/s{i}.ns.svc.cluster.local"),
                PortList {
                    ports: vec![Port {
                        service_port: i,
                        target_port: i + 1,
                    }],
                },
            );
        }
        let a = pack_workload(&w);
        let b = pack_workload(&w.clone());
        assert_eq!(a, b);
        let back: Address = api::unpack(&a).expect("decodes");
        assert_eq!(back.r#type, Some(address::Type::Workload(w)));
    }
}
