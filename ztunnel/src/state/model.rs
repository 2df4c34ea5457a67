//! The proxy's own model of workloads and services, converted from the xDS types once on
//! arrival so the data path never touches protobuf.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hbone::Identity;

/// How traffic to a workload is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TunnelProtocol {
    /// Over HBONE to `ip:15008` (the workload is captured by a ztunnel).
    Hbone,
    /// Plain TCP to the workload itself (not in the mesh).
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
#[derive(Clone, Debug, serde::Serialize)]
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
}

impl Workload {
    /// The SPIFFE identity of this workload.
    pub fn identity(&self) -> Identity {
        let _ = self;
        todo!()
    }
}

/// A service.
#[derive(Clone, Debug, serde::Serialize)]
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
