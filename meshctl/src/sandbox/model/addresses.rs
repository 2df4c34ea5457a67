//! The sandbox's address plan and names on the host: the service range,
//! node and pod addresses, ClusterIP allocation and network namespace names.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::ids::fnv64;

/// Where ClusterIPs come from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Node addresses on the fabric bridge: node N is 172.18.0.(N+1).
pub const NODE_CIDR_PREFIX: u8 = 16;
/// Most nodes a sandbox may have (each node owns a /24 of 10.244.0.0/16).
pub const MAX_NODES: u32 = 50;
/// Pod addresses of a node's /24: .2 to .254 (.1 is the node's gateway).
pub const PODS_PER_NODE: u32 = 253;

/// True for addresses in [`SERVICE_CIDR`].
pub fn in_service_range(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10 && o[1] == 96
}

/// First free ClusterIP at or after 10.96.0.10 (lower addresses are left
/// for well-known services, as in Kubernetes).
pub fn allocate_cluster_ip(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (10u32..65535)
        .map(|n| Ipv4Addr::new(10, 96, (n >> 8) as u8, (n & 0xff) as u8))
        .find(|ip| ip.octets()[3] != 0 && ip.octets()[3] != 255 && !used.contains(ip))
}

/// `ms-<sandbox>.`: what every namespace of the sandbox starts with. The dot
/// cannot occur in sandbox names, so one sandbox's prefix never matches
/// another's namespaces.
pub fn netns_prefix(sandbox: &str) -> String {
    format!("ms-{sandbox}.")
}

/// A namespace name, hashed down when long so paths stay readable.
pub fn netns_name(sandbox: &str, rest: &str) -> String {
    let full = format!("{}{rest}", netns_prefix(sandbox));
    if full.len() <= 64 {
        return full;
    }
    let keep: String = rest.chars().take(40).collect();
    format!(
        "{}{keep}-{:08x}",
        netns_prefix(sandbox),
        fnv64(rest.as_bytes()) as u32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_and_names() {
        let mut used = BTreeSet::new();
        let a = allocate_cluster_ip(&used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 96, 0, 10));
        used.insert(a);
        assert_eq!(
            allocate_cluster_ip(&used).unwrap(),
            Ipv4Addr::new(10, 96, 0, 11)
        );
        let long = netns_name("s", &"x".repeat(100));
        assert!(long.len() <= 64 && long.starts_with("ms-s."));
        assert_eq!(netns_name("s", "node1"), "ms-s.node1");
    }
}
