//! Settings both mesh proxies share, and their command-line flags: how to reach the
//! controller, the mesh, the proxy's endpoints, certificate lifetime, drain and connection
//! limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hbone::ServerLimits;

/// Addresses of the three endpoints.
#[derive(Clone, Copy, Debug)]
pub struct AdminAddresses {
    /// `/config_dump`.
    pub admin: SocketAddr,
    /// `/metrics`.
    pub metrics: SocketAddr,
    /// `/healthz/ready`.
    pub ready: SocketAddr,
}

/// How to reach and trust the controller (xDS and CA on one gRPC endpoint).
#[derive(Clone, Debug)]
pub struct ControlPlaneSettings {
    /// `host:port` of the controller's gRPC endpoint (15012).
    pub address: String,
    /// PEM bundle of roots the controller's serving certificate must chain to.
    pub root_cert: PathBuf,
    /// File holding the bearer token sent with every call; re-read on each connection.
    pub token_file: Option<PathBuf>,
    /// SPIFFE identity the controller must present (its certificate's URI SAN).
    pub server_identity: String,
    /// Roots learned from the controller while running (empty at start), trusted beside
    /// `root_cert`; clones share them.
    pub learned_roots: crate::learned_roots::LearnedRoots,
}

/// What both mesh proxies (ztunnel's proxy role and the waypoint) are told about their mesh,
/// endpoints, certificates and shutdown.
#[derive(Clone, Debug)]
pub struct MeshProxySettings {
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
    /// What a peer may hold on the proxy's HBONE listeners (and, for the waypoint, on the
    /// HTTP it serves inside tunnels).
    pub limits: ServerLimits,
}

/// The command-line flags of [`MeshProxySettings`], shared by the proxy binaries.
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
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The flags of [`ServerLimits`]; defaults are [`ServerLimits::default`]'s, which documents
/// why each is what it is.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Seconds a peer may take to finish the TLS handshake on HBONE.
    #[arg(long, default_value_t = ServerLimits::default().tls_handshake_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_handshake_timeout_secs: u64,
    /// Seconds a peer may take to send the HTTP/2 preface and first SETTINGS frame.
    #[arg(long, default_value_t = ServerLimits::default().http2_handshake_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub http2_handshake_timeout_secs: u64,
    /// Seconds an HTTP/2 header block may stay open (a HEADERS frame until END_HEADERS).
    #[arg(long, default_value_t = ServerLimits::default().header_block_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub header_block_timeout_secs: u64,
    /// Seconds an HTTP/2 connection may carry no stream before GOAWAY and close.
    #[arg(long, default_value_t = ServerLimits::default().idle_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Streams a peer may have open at once on one HTTP/2 connection.
    #[arg(long, default_value_t = ServerLimits::default().max_concurrent_streams, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// Connections one source address may hold at once on an HBONE listener; more are closed
    /// at accept.
    #[arg(long, default_value_t = ServerLimits::default().max_connections_per_peer, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_peer: usize,
}

impl LimitArgs {
    /// The limits these flags describe; the rest keep their defaults.
    pub fn limits(&self) -> ServerLimits {
        ServerLimits {
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
            http2_handshake_timeout: Duration::from_secs(self.http2_handshake_timeout_secs),
            header_block_timeout: Duration::from_secs(self.header_block_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_concurrent_streams: self.max_concurrent_streams,
            max_connections_per_peer: self.max_connections_per_peer,
            ..ServerLimits::default()
        }
    }
}

impl MeshProxyArgs {
    /// The settings these flags describe.
    pub fn config(&self) -> MeshProxySettings {
        MeshProxySettings {
            cluster_id: self.cluster_id.clone(),
            trust_domain: self.trust_domain.clone(),
            endpoints: AdminAddresses {
                admin: self.admin_addr,
                metrics: self.metrics_addr,
                ready: self.ready_addr,
            },
            cert_ttl: Duration::from_secs(self.cert_ttl_secs),
            drain_deadline: Duration::from_secs(self.drain_secs),
            limits: self.limits.limits(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mesh: MeshProxyArgs,
    }

    #[test]
    fn limit_flags_default_to_the_server_defaults_and_override_them() {
        let defaults = Cli::parse_from(["proxy"]).mesh.config();
        assert_eq!(defaults.limits, ServerLimits::default());
        let set = Cli::parse_from([
            "proxy",
            "--tls-handshake-timeout-secs=2",
            "--http2-handshake-timeout-secs=3",
            "--header-block-timeout-secs=4",
            "--idle-timeout-secs=5",
            "--max-concurrent-streams=6",
            "--max-connections-per-peer=7",
        ])
        .mesh
        .config()
        .limits;
        assert_eq!(set.tls_handshake_timeout, Duration::from_secs(2));
        assert_eq!(set.http2_handshake_timeout, Duration::from_secs(3));
        assert_eq!(set.header_block_timeout, Duration::from_secs(4));
        assert_eq!(set.idle_timeout, Duration::from_secs(5));
        assert_eq!(set.max_concurrent_streams, 6);
        assert_eq!(set.max_connections_per_peer, 7);
        assert!(Cli::try_parse_from(["proxy", "--idle-timeout-secs=0"]).is_err());
        assert!(Cli::try_parse_from(["proxy", "--max-connections-per-peer=0"]).is_err());
    }
}
