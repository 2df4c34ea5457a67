//! What the proxy knows about the mesh: workloads, services and authorization policies from
//! the controller, indexed for the data path's lookups.
//!
//! Resources are converted and validated once on arrival ([`convert`], [`authz`]); the data
//! path reads `Arc`s of the model types under a short read lock that is never held across an
//! `.await`.

mod authz;
mod convert;
mod index;
mod model;

pub use authz::{
    Action as PolicyAction, AuthzRequest, Cidr, Decision, Match as PolicyMatch, Policy,
    Scope as PolicyScope, StringMatch,
};
pub use convert::InvalidResource;
pub use model::{
    DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Endpoint, Service, TunnelProtocol, WaypointRef,
    WaypointTarget, Workload, identity_of,
};

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use index::Index;

/// Shared, cheaply cloned handle on the proxy's view of the mesh.
#[derive(Clone, Default)]
pub struct ProxyState {
    shared: Arc<Shared>,
}

struct Shared {
    index: RwLock<Index>,
    synced: AtomicBool,
    /// Counts changes; receivers wake on each.
    changes: tokio::sync::watch::Sender<u64>,
    /// Counts the changes that may alter an authorization decision (a subset of `changes`).
    authz_changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            index: RwLock::default(),
            synced: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            authz_changes: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl ProxyState {
    /// An empty state (not synced).
    pub fn new() -> Self {
        Self::default()
    }

    // A panic while holding the lock cannot leave the index half-updated in a way that
    // matters more than stopping the proxy would, so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.shared
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.shared
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Signals a change that may alter authorization decisions.
    fn authz_changed(&self) {
        self.shared
            .authz_changes
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Inserts or replaces the xDS `Address` resource `name`. An invalid resource is refused
    /// with a reason (NACK) and changes nothing.
    pub fn apply_address(&self, name: &str, address: api::workload::Address) -> Result<(), String> {
        let converted = convert::address(address).map_err(|e| e.to_string())?;
        let authorization_changed = self.write().insert_address(name, converted);
        if authorization_changed {
            self.authz_changed();
        }
        self.changed();
        Ok(())
    }

    /// Removes the `Address` resource `name` (a workload uid or `namespace/hostname`).
    pub fn remove_address(&self, name: &str) {
        let removed = self.write().remove_address(name);
        if removed {
            self.changed();
        }
    }

    /// Inserts or replaces the authorization policy `name` (`namespace/name`).
    pub fn apply_authorization(
        &self,
        name: &str,
        policy: api::security::Authorization,
    ) -> Result<(), String> {
        let policy = authz::convert(policy).map_err(|e| e.to_string())?;
        self.write().insert_policy(name, policy);
        self.authz_changed();
        self.changed();
        Ok(())
    }

    /// Removes the authorization policy `name`.
    pub fn remove_authorization(&self, name: &str) {
        let removed = self.write().remove_policy(name);
        if removed {
            self.authz_changed();
            self.changed();
        }
    }

    /// Records that the first response of every subscribed type has been applied.
    pub fn mark_synced(&self) {
        if !self.shared.synced.swap(true, Ordering::AcqRel) {
            self.changed();
        }
    }

    /// Whether the initial config has arrived.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// The workload owning `ip` (its pod IP).
    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        self.read().workload_by_ip(ip.to_canonical())
    }

    /// The workload with `uid`.
    pub fn workload_by_uid(&self, uid: &str) -> Option<Arc<Workload>> {
        self.read().workloads.get(uid).cloned()
    }

    /// The service with virtual IP `ip`.
    pub fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.read().service_by_vip(ip.to_canonical())
    }

    /// The service `hostname` in `namespace`.
    pub fn service_by_host(&self, namespace: &str, hostname: &str) -> Option<Arc<Service>> {
        self.read()
            .services
            .get(&format!("{namespace}/{hostname}"))
            .cloned()
    }

    /// Healthy endpoints of `service` for service port `port`, each with the target port on
    /// that workload (named target ports are resolved per workload by the controller).
    ///
    /// As in Istio, a port the service does not declare has no endpoints; a workload's own
    /// target port wins over the service's, and a workload with neither is skipped.
    pub fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint> {
        self.read().endpoints(service, port)
    }

    /// Workloads scheduled on `node`.
    pub fn workloads_on_node(&self, node: &str) -> Vec<Arc<Workload>> {
        self.read().workloads_on_node(node)
    }

    /// Evaluates L4 authorization for a connection to a local workload, in Istio's order.
    pub fn authorize(&self, request: &AuthzRequest<'_>) -> Decision {
        let index = self.read();
        authz::evaluate(index.policies_for(request.destination), request)
    }

    /// A receiver that changes whenever workloads, services or policies change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// A receiver that changes whenever an authorization decision may have changed: a policy
    /// was added, replaced or removed, or a known workload's namespace, addresses or selector
    /// policies changed. The data path re-checks live connections on it, so updates that
    /// cannot matter to them (a new pod elsewhere, a health change, a service) cost nothing.
    ///
    /// A workload seen for the first time or removed does not count: live connections hold the
    /// workload they were authorized against and fall back to it while it is unknown.
    pub fn authz_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.authz_changes.subscribe()
    }

    /// The known workloads, services and policies as JSON, for `/config_dump`.
    pub fn config_dump(&self) -> serde_json::Value {
        let index = self.read();
        serde_json::json!({
            "synced": self.is_synced(),
            "workloads": index.workloads.values().map(Arc::as_ref).collect::<Vec<_>>(),
            "services": index.services.values().map(Arc::as_ref).collect::<Vec<_>>(),
            "policies": index.policies.values().map(Arc::as_ref).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests;
