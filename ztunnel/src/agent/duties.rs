//! What the agent does for its node beside capturing pods, handed to the enrollment loop.

use std::sync::Arc;

use super::host_rules::HostRules;
use super::metrics::AgentMetrics;
use super::uninstall::UninstallCheck;
use crate::settings::CniInstallSettings;

/// What the agent does for the node beside capturing its pods.
#[derive(Debug, Default)]
pub struct NodeDuties {
    /// The node's probe rule, when kept.
    pub host: Option<HostRules>,
    /// How to tell, when the agent stops, whether the mesh is being uninstalled (then every
    /// pod is released); `None`: a stop always leaves the pods captured.
    pub uninstall: Option<UninstallCheck>,
    /// The socket the chained CNI plugin asks on, to capture pods as they are created.
    pub cni: Option<tokio::net::UnixListener>,
    /// Where the plugin was put into the node's CNI configuration, for an uninstall to take
    /// it out.
    pub cni_install: Option<CniInstallSettings>,
    /// Where the agent counts what it refused.
    pub metrics: Arc<AgentMetrics>,
}
