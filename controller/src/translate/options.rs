//! How the controller translates: trust domain, root namespace, cluster name, and the names
//! derived from them.

/// Settings of the translation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// SPIFFE trust domain of workload identities (`cluster.local`).
    pub trust_domain: String,
    /// Namespace whose policies apply mesh-wide (`istio-system`).
    pub root_namespace: String,
    /// Cluster name put in workload uids (`Kubernetes`).
    pub cluster_id: String,
    /// Linkerd's `clusterNetworks`: the client networks its `cluster-*` default inbound
    /// policies admit (CIDRs).
    pub cluster_networks: Vec<String>,
}

/// Linkerd's default `clusterNetworks`: every private IPv4 network and the IPv6 ULAs.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8";

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".to_string(),
            root_namespace: "istio-system".to_string(),
            cluster_id: "Kubernetes".to_string(),
            cluster_networks: DEFAULT_CLUSTER_NETWORKS
                .split(',')
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// DNS suffix of Service hostnames (`<name>.<ns>.svc.cluster.local`).
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// `<name>.<namespace>.svc.cluster.local`.
pub(crate) fn service_hostname(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{DOMAIN_SUFFIX}")
}
