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
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".to_string(),
            root_namespace: "istio-system".to_string(),
            cluster_id: "Kubernetes".to_string(),
        }
    }
}

/// DNS suffix of Service hostnames (`<name>.<ns>.svc.cluster.local`).
pub const DOMAIN_SUFFIX: &str = "cluster.local";

/// `<name>.<namespace>.svc.cluster.local`.
pub(crate) fn service_hostname(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{DOMAIN_SUFFIX}")
}
