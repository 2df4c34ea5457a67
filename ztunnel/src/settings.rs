//! Settings of the two roles, filled from the command line by the binary.

use std::path::PathBuf;

use proxy_core::settings::{ControlPlaneSettings, MeshProxySettings};

/// Settings of the proxy role.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Name of the node this ztunnel serves (matches `Workload.node`).
    pub node: String,
    /// The controller.
    pub control: ControlPlaneSettings,
    /// ZDS socket served by the node agent.
    pub zds_socket: PathBuf,
    /// Mesh, endpoints, certificates and shutdown.
    pub mesh: MeshProxySettings,
}

/// Settings of the node agent role.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Name of the node this agent serves.
    pub node: String,
    /// The controller (the agent learns enrollment from its workloads).
    pub control: ControlPlaneSettings,
    /// ZDS socket to serve; the proxy connects to it.
    pub zds_socket: PathBuf,
    /// Where pods' network namespaces are found. With `Some(dir)`, `dir/<namespace>.<pod name>`
    /// is a network namespace file (the sandbox provides this); with `None`, the namespace holding
    /// the pod's IP is found through `/proc` (Kubernetes).
    pub netns_dir: Option<PathBuf>,
    /// The node's own network namespace, where the rule SNATing kubelet's probes of captured
    /// pods is kept (`/proc/1/ns/net` on Kubernetes, with `hostPID`); `None` keeps none.
    pub host_netns: Option<PathBuf>,
    /// Where the agent serves its own `/metrics`; `None` serves none.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The DaemonSet whose deletion, seen when the agent stops, means the mesh is being
    /// uninstalled from the node; `None`: a stop always leaves the pods captured.
    pub uninstall: Option<crate::agent::uninstall::UninstallCheck>,
    /// The socket the chained CNI plugin asks on; `None` serves none.
    pub cni_socket: Option<PathBuf>,
    /// Where to put the plugin into the node's CNI configuration (pointing it at
    /// `cni_socket`, the same path on the host); `None` leaves it alone.
    pub cni_install: Option<CniInstallSettings>,
}

/// Putting the CNI plugin into the node's configuration (the agent's host mounts).
#[derive(Clone, Debug)]
pub struct CniInstallSettings {
    /// The plugin binary to copy (in the agent's image).
    pub plugin: PathBuf,
    /// The host's CNI bin folder.
    pub bin_dir: PathBuf,
    /// The host's CNI conf folder.
    pub conf_dir: PathBuf,
    /// Namespaces the plugin never asks the agent about.
    pub exclude_namespaces: Vec<String>,
}
