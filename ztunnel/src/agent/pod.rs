//! A pod on this node as the agent sees it, from the workloads the controller sends.

use std::net::IpAddr;

use proxy_core::state::{ProxyState, TunnelProtocol};

/// A pod on this node, as the agent needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePod {
    /// Workload uid (`<cluster>//Pod/<namespace>/<name>`); the ZDS uid of the pod.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod service account.
    pub service_account: String,
    /// Pod IPs (find its namespace in `/proc`, choose IP families).
    pub addresses: Vec<IpAddr>,
    /// Whether the pod is to be captured (HBONE, not host-network).
    pub enrolled: bool,
}

impl NodePod {
    pub(super) fn info(&self) -> api::zds::WorkloadInfo {
        api::zds::WorkloadInfo {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
        }
    }
}

/// The pods `state` places on `node`, sorted by uid.
pub fn node_pods(state: &ProxyState, node: &str) -> Vec<NodePod> {
    let mut pods: Vec<NodePod> = state
        .workloads_on_node(node)
        .iter()
        .map(|w| NodePod {
            uid: w.uid.clone(),
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            service_account: w.service_account.clone(),
            addresses: w.addresses.clone(),
            // A host-network pod shares the node's namespace: never captured, as in Istio.
            enrolled: w.protocol == TunnelProtocol::Hbone && !w.host_network,
        })
        .collect();
    pods.sort_by(|a, b| a.uid.cmp(&b.uid));
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::workload::{Address, NetworkMode, Workload, address};

    fn workload(name: &str, node: &str, hbone: bool, host_network: bool) -> Address {
        Address {
            r#type: Some(address::Type::Workload(Workload {
                uid: format!("Kubernetes//Pod/shop/{name}"),
                name: name.into(),
                namespace: "shop".into(),
                addresses: vec![vec![10, 244, 1, 9]],
                tunnel_protocol: if hbone {
                    api::workload::TunnelProtocol::Hbone as i32
                } else {
                    api::workload::TunnelProtocol::None as i32
                },
                trust_domain: "cluster.local".into(),
                service_account: "web".into(),
                node: node.into(),
                network_mode: if host_network {
                    NetworkMode::HostNetwork as i32
                } else {
                    NetworkMode::Standard as i32
                },
                ..Default::default()
            })),
        }
    }

    #[test]
    fn node_pods_are_this_nodes_workloads_enrolled_when_hbone() {
        let state = ProxyState::new();
        for (name, node, hbone, host) in [
            ("a", "node1", true, false),
            ("b", "node1", false, false),
            ("c", "node2", true, false),
            ("d", "node1", true, true),
        ] {
            let w = workload(name, node, hbone, host);
            state
                .apply_address(&format!("Kubernetes//Pod/shop/{name}"), w)
                .unwrap();
        }
        let pods = node_pods(&state, "node1");
        let view: Vec<(&str, bool)> = pods.iter().map(|p| (p.name.as_str(), p.enrolled)).collect();
        assert_eq!(view, [("a", true), ("b", false), ("d", false)]);
        assert_eq!(pods[0].uid, "Kubernetes//Pod/shop/a");
        assert_eq!(pods[0].service_account, "web");
        assert_eq!(pods[0].addresses, ["10.244.1.9".parse::<IpAddr>().unwrap()]);
    }
}
