//! Versions of resources: a hash of their encoding.
//!
//! Every map in a served resource is ordered (see `api/build.rs`), so equal
//! content always encodes to equal bytes and gets an equal version.

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

#[cfg(test)]
mod tests {
    use super::*;
    use api::workload::{Address, Port, PortList, Workload, address};

    fn workload(services: impl Iterator<Item = u32>) -> Address {
        let mut w = Workload {
            uid: "Kubernetes//Pod/ns/p".into(),
            ..Default::default()
        };
        for i in services {
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
        Address {
            r#type: Some(address::Type::Workload(w)),
        }
    }

    #[test]
    fn equal_workloads_get_equal_versions() {
        let forward = api::pack(&workload(0..20));
        let backward = api::pack(&workload((0..20).rev()));
        assert_eq!(forward, backward);
        assert_eq!(version(&forward.value), version(&backward.value));
        assert_ne!(
            version(&forward.value),
            version(&api::pack(&workload(0..19)).value)
        );
        let back: Address = api::unpack(&forward).expect("decodes");
        assert_eq!(back, workload(0..20));
    }
}
