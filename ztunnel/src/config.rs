//! Settings of the two roles, filled from the command line by the binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Cluster id used in workload uids and telemetry.
    pub cluster_id: String,
    /// Trust domain of this mesh's identities.
    pub trust_domain: String,
    /// The controller.
    pub control: ControlPlaneConfig,
    /// ZDS socket served by the node agent.
    pub zds_socket: PathBuf,
    /// Admin endpoint (`/config_dump`), localhost only (15000).
    pub admin_addr: SocketAddr,
    /// Prometheus endpoint (`/metrics`, 15020).
    pub metrics_addr: SocketAddr,
    /// Readiness endpoint (`/healthz/ready`, 15021).
    pub ready_addr: SocketAddr,
    /// Lifetime asked for workload certificates.
    pub cert_ttl: Duration,
    /// How long in-flight connections may run after SIGTERM.
    pub drain_deadline: Duration,
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
