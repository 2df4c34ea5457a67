//! The proxy's own model of workloads and services, converted from the xDS types once on
//! arrival so the data path never touches protobuf.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hbone::Identity;

/// How traffic to a workload is carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum TunnelProtocol {
    /// Over HBONE to `ip:15008` (the workload is captured by a ztunnel).
    Hbone,
    /// Plain TCP to the workload itself (not in the mesh); the workload API's default.
    #[default]
    Tcp,
}

/// Where a waypoint is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum WaypointTarget {
    /// A service VIP (resolved to the waypoint's endpoints).
    Address(IpAddr),
    /// A service by `namespace` and `hostname`.
    Hostname {
        /// Namespace of the waypoint's service.
        namespace: String,
        /// Hostname of the waypoint's service.
        hostname: String,
    },
}

/// A waypoint a service or workload sends its traffic through.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WaypointRef {
    /// The waypoint's service.
    pub target: WaypointTarget,
    /// The waypoint's HBONE port (15008).
    pub hbone_port: u16,
}

/// A workload (a pod).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// Unique id: `<cluster>//Pod/<namespace>/<name>`.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Pod IPs.
    pub addresses: Vec<IpAddr>,
    /// HBONE or plain TCP.
    pub protocol: TunnelProtocol,
    /// Trust domain of its identity.
    pub trust_domain: String,
    /// Service account.
    pub service_account: String,
    /// Node it runs on.
    pub node: String,
    /// Waypoint serving this workload's own traffic, if any.
    pub waypoint: Option<WaypointRef>,
    /// `service.istio.io/canonical-name` (or `app`).
    pub canonical_name: String,
    /// `service.istio.io/canonical-revision` (or `version`).
    pub canonical_revision: String,
    /// Owning workload name (Deployment name).
    pub workload_name: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Healthy endpoints receive traffic; unhealthy ones do not.
    pub healthy: bool,
    /// `namespace/hostname` of each service selecting it → service port → target port.
    pub services: BTreeMap<String, BTreeMap<u16, u16>>,
    /// `namespace/name` of the WORKLOAD_SELECTOR authorization policies that apply to it
    /// (the controller resolves selectors; the proxy only looks the names up).
    pub authorization_policies: Vec<String>,
    /// Its addresses are its node's (host networking): they do not identify it, so it is not
    /// found by IP.
    pub host_network: bool,
}

/// Trust domain assumed when a workload names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Service account assumed when a workload names none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

impl Workload {
    /// The SPIFFE identity of this workload:
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, with `cluster.local` and
    /// `default` standing in for an empty trust domain and service account.
    ///
    /// Workloads that arrive over xDS are checked to have a valid identity; a hand-built one
    /// that has none gets a placeholder no real pod can hold (its namespace contains a dot,
    /// which Kubernetes namespaces never do), so it matches no policy and no peer.
    pub fn identity(&self) -> Identity {
        self.try_identity()
            .unwrap_or_else(|_| placeholder_identity().clone())
    }

    /// The SPIFFE identity of this workload, or why its parts do not form one.
    pub fn try_identity(&self) -> Result<Identity, hbone::IdentityError> {
        identity_of(&self.trust_domain, &self.namespace, &self.service_account)
    }
}

/// The SPIFFE identity of a pod of `namespace` running as `service_account`, with Istio's
/// `cluster.local` and `default` standing in for an empty trust domain and service account.
pub fn identity_of(
    trust_domain: &str,
    namespace: &str,
    service_account: &str,
) -> Result<Identity, hbone::IdentityError> {
    fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
        if value.is_empty() { default } else { value }
    }
    Identity::new(
        or(trust_domain, DEFAULT_TRUST_DOMAIN),
        namespace,
        or(service_account, DEFAULT_SERVICE_ACCOUNT),
    )
}

/// The identity of workloads whose own is invalid; see [`Workload::identity`].
fn placeholder_identity() -> &'static Identity {
    static PLACEHOLDER: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
    PLACEHOLDER.get_or_init(|| {
        Identity::new(DEFAULT_TRUST_DOMAIN, "invalid.workload", "invalid.workload")
            // A constant that the identity rules accept (checked by a test).
            .expect("the placeholder identity is valid")
    })
}

/// A service.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Fully qualified hostname.
    pub hostname: String,
    /// Virtual IPs.
    pub vips: Vec<IpAddr>,
    /// Service port → target port (0 when the target port is named and resolved per workload).
    pub ports: BTreeMap<u16, u16>,
    /// Identities its endpoints may present besides their own.
    pub subject_alt_names: Vec<String>,
    /// Waypoint in front of the service, if any.
    pub waypoint: Option<WaypointRef>,
}

impl Service {
    /// `namespace/hostname`: the key of this service in `Workload::services`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.hostname)
    }
}

/// One endpoint of a service port.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The workload.
    pub workload: Arc<Workload>,
    /// Port on the workload.
    pub port: u16,
}
