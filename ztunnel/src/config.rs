//! Settings of the two roles, filled from the command line by the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::admin::AdminAddresses;

/// How to reach and trust the controller (xDS and CA on one gRPC endpoint).
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// `host:port` of the controller's gRPC endpoint (15012).
    pub address: String,
    /// PEM bundle of roots the controller's serving certificate must chain to.
    pub root_cert: PathBuf,
    /// File holding the bearer token sent with every call; re-read on each connection.
    pub token_file: Option<PathBuf>,
    /// SPIFFE identity the controller must present (its certificate's URI SAN).
    pub server_identity: String,
}

/// Settings of the proxy role.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Name of the node this ztunnel serves (matches `Workload.node`).
    pub node: String,
    /// The controller.
    pub control: ControlPlaneConfig,
    /// ZDS socket served by the node agent.
    pub zds_socket: PathBuf,
    /// Mesh, endpoints, certificates and shutdown.
    pub mesh: MeshProxyConfig,
}

/// What both mesh proxies (ztunnel's proxy role and the waypoint) are told about their mesh,
/// endpoints, certificates and shutdown.
#[derive(Clone, Debug)]
pub struct MeshProxyConfig {
    /// Cluster id used in workload uids, xDS node metadata and telemetry.
    pub cluster_id: String,
    /// Trust domain of this mesh's identities.
    pub trust_domain: String,
    /// `/config_dump` (localhost 15000), `/metrics` (15020), `/healthz/ready` (15021).
    pub endpoints: AdminAddresses,
    /// Lifetime asked for certificates.
    pub cert_ttl: Duration,
    /// How long in-flight connections and requests may run after SIGTERM.
    pub drain_deadline: Duration,
}

/// The command-line flags of [`MeshProxyConfig`], shared by the proxy binaries.
#[derive(clap::Args, Clone, Debug)]
pub struct MeshProxyArgs {
    /// Cluster id.
    #[arg(long, default_value = "Kubernetes")]
    pub cluster_id: String,
    /// Trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Admin endpoint (`/config_dump`).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:15020")]
    pub metrics_addr: SocketAddr,
    /// Readiness endpoint.
    #[arg(long, default_value = "0.0.0.0:15021")]
    pub ready_addr: SocketAddr,
    /// Requested certificate lifetime, in seconds.
    #[arg(long, default_value_t = 86400)]
    pub cert_ttl_secs: u64,
    /// How long in-flight connections and requests may run after SIGTERM, in seconds.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
}

impl MeshProxyArgs {
    /// The settings these flags describe.
    pub fn config(&self) -> MeshProxyConfig {
        MeshProxyConfig {
            cluster_id: self.cluster_id.clone(),
            trust_domain: self.trust_domain.clone(),
            endpoints: AdminAddresses {
                admin: self.admin_addr,
                metrics: self.metrics_addr,
                ready: self.ready_addr,
            },
            cert_ttl: Duration::from_secs(self.cert_ttl_secs),
            drain_deadline: Duration::from_secs(self.drain_secs),
        }
    }
}

/// Settings of the node agent role.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Name of the node this agent serves.
    pub node: String,
    /// The controller (the agent learns enrollment from its workloads).
    pub control: ControlPlaneConfig,
    /// ZDS socket to serve; the proxy connects to it.
    pub zds_socket: PathBuf,
    /// Where pods' network namespaces are found. With `Some(dir)`, `dir/<namespace>.<pod name>`
    /// is a network namespace file (the sandbox provides this); with `None`, the namespace holding
    /// the pod's IP is found through `/proc` (Kubernetes).
    pub netns_dir: Option<PathBuf>,
}
