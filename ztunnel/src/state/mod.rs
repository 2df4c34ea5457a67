//! What the proxy knows about the mesh: workloads, services and authorization policies from
//! the controller, indexed for the data path's lookups.

mod authz;
mod model;

pub use authz::{AuthzRequest, Decision};
pub use model::{Endpoint, Service, TunnelProtocol, WaypointRef, WaypointTarget, Workload};

use std::net::IpAddr;
use std::sync::Arc;

/// Shared, cheaply cloned handle on the proxy's view of the mesh.
#[derive(Clone, Default)]
pub struct ProxyState {
    _inner: Arc<()>,
}

impl ProxyState {
    /// An empty state (not synced).
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces the xDS `Address` resource `name`. An invalid resource is refused
    /// with a reason (NACK) and changes nothing.
    pub fn apply_address(&self, name: &str, address: api::workload::Address) -> Result<(), String> {
        let _ = (name, address);
        todo!()
    }

    /// Removes the `Address` resource `name` (a workload uid or `namespace/hostname`).
    pub fn remove_address(&self, name: &str) {
        let _ = name;
        todo!()
    }

    /// Inserts or replaces the authorization policy `name` (`namespace/name`).
    pub fn apply_authorization(
        &self,
        name: &str,
        policy: api::security::Authorization,
    ) -> Result<(), String> {
        let _ = (name, policy);
        todo!()
    }

    /// Removes the authorization policy `name`.
    pub fn remove_authorization(&self, name: &str) {
        let _ = name;
        todo!()
    }

    /// Records that the first response of every subscribed type has been applied.
    pub fn mark_synced(&self) {
        todo!()
    }

    /// Whether the initial config has arrived.
    pub fn is_synced(&self) -> bool {
        todo!()
    }

    /// The workload owning `ip` (its pod IP).
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        let _ = ip;
        todo!()
    }

    /// The workload with `uid`.
    pub fn workload_by_uid(&self, uid: &str) -> Option<Arc<Workload>> {
        let _ = uid;
        todo!()
    }

    /// The service with virtual IP `ip`.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        let _ = ip;
        todo!()
    }

    /// The service `hostname` in `namespace`.
    pub fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>> {
        let _ = (namespace, hostname);
        todo!()
    }

    /// Healthy endpoints of `service` for service port `port`, each with the target port on
    /// that workload (named target ports are resolved per workload by the controller).
    pub fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint> {
        let _ = (service, port);
        todo!()
    }

    /// Workloads scheduled on `node`.
    pub fn workloads_on_node(&self, node: &str) -> Vec<Arc<Workload>> {
        let _ = node;
        todo!()
    }

    /// Evaluates L4 authorization for a connection to a local workload, in Istio's order.
    pub fn authorize(&self, request: &AuthzRequest<'_>) -> Decision {
        let _ = request;
        todo!()
    }

    /// A receiver that changes whenever workloads, services or policies change (the data
    /// path re-checks live connections on policy changes).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        todo!()
    }

    /// The known workloads, services and policies as JSON, for `/config_dump`.
    pub fn config_dump(&self) -> serde_json::Value {
        todo!()
    }
}
