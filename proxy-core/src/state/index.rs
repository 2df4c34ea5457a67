//! The indexes behind [`ProxyState`](super::ProxyState): workloads by uid, address and node;
//! services by key and VIP; service endpoints; policies by key and scope. Plain data, mutated
//! under the state's write lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::authz::{Policy, Scope};
use super::convert::Converted;
use super::model::{Endpoint, Service, Workload};

/// What an `Address` resource name stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum AddressKey {
    /// A workload, by uid.
    Workload(String),
    /// A service, by `namespace/hostname`.
    Service(String),
}

/// Everything known, with the lookups the data path needs.
#[derive(Default)]
pub(super) struct Index {
    /// `Address` resource name → the workload or service it carries.
    address_names: HashMap<String, AddressKey>,
    /// The inverse of `address_names`: which resource name carries a workload or service.
    address_owners: HashMap<AddressKey, String>,
    /// Workloads by uid.
    pub(super) workloads: BTreeMap<String, Arc<Workload>>,
    /// Workload uid by address (host-network workloads excluded).
    by_ip: HashMap<IpAddr, String>,
    /// Workload uids by node.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Services by `namespace/hostname`.
    pub(super) services: BTreeMap<String, Arc<Service>>,
    /// Service key by VIP.
    by_vip: HashMap<IpAddr, String>,
    /// Workload uids by the service key they back (whether or not the service is known yet).
    endpoints: HashMap<String, BTreeSet<String>>,
    /// `Authorization` resource name → policy key.
    policy_names: HashMap<String, String>,
    /// The inverse of `policy_names`: which resource name carries a policy.
    policy_owners: HashMap<String, String>,
    /// Policies by `namespace/name`.
    pub(super) policies: BTreeMap<String, Arc<Policy>>,
    /// Keys of GLOBAL policies.
    global_policies: BTreeSet<String>,
    /// Keys of NAMESPACE policies, by namespace.
    namespace_policies: HashMap<String, BTreeSet<String>>,
}

impl Index {
    /// Inserts (or replaces) the `Address` resource `name`. Returns whether it changed what
    /// authorization reads of a workload already known (see [`same_authorization_inputs`]).
    pub(super) fn insert_address(&mut self, name: &str, converted: Converted) -> bool {
        let authorization_changed = match &converted {
            Converted::Workload(new) => self
                .workloads
                .get(&new.uid)
                .is_some_and(|old| !same_authorization_inputs(old, new)),
            Converted::Service(_) => false,
        };
        // The resource may have held something else before (another uid, or a service).
        self.remove_address(name);
        let key = match converted {
            Converted::Workload(workload) => {
                let key = AddressKey::Workload(workload.uid.clone());
                self.forget_address_key(&key);
                self.insert_workload(workload);
                key
            }
            Converted::Service(service) => {
                let key = AddressKey::Service(service.key());
                self.forget_address_key(&key);
                self.insert_service(service);
                key
            }
        };
        self.address_owners.insert(key.clone(), name.to_owned());
        self.address_names.insert(name.to_owned(), key);
        authorization_changed
    }

    /// Removes the `Address` resource `name`; false if it was not known.
    pub(super) fn remove_address(&mut self, name: &str) -> bool {
        let Some(key) = self.address_names.remove(name) else {
            return false;
        };
        self.address_owners.remove(&key);
        self.remove_address_entries(&key);
        true
    }

    /// Drops whatever other resource name carried `key` (two names for one uid: the newer
    /// one wins), and the entries it had.
    fn forget_address_key(&mut self, key: &AddressKey) {
        if let Some(other) = self.address_owners.remove(key) {
            self.address_names.remove(&other);
            self.remove_address_entries(key);
        }
    }

    fn remove_address_entries(&mut self, key: &AddressKey) {
        match key {
            AddressKey::Workload(uid) => self.remove_workload(uid),
            AddressKey::Service(key) => self.remove_service(key),
        }
    }

    fn insert_workload(&mut self, workload: Workload) {
        let uid = workload.uid.clone();
        if !workload.host_network {
            for ip in &workload.addresses {
                self.by_ip.insert(ip.to_canonical(), uid.clone());
            }
        }
        self.by_node
            .entry(workload.node.clone())
            .or_default()
            .insert(uid.clone());
        for service in workload.services.keys() {
            self.endpoints
                .entry(service.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.workloads.insert(uid, Arc::new(workload));
    }

    fn remove_workload(&mut self, uid: &str) {
        let Some(workload) = self.workloads.remove(uid) else {
            return;
        };
        for ip in &workload.addresses {
            let ip = ip.to_canonical();
            // Another workload may have claimed the address since.
            if self.by_ip.get(&ip).is_some_and(|owner| owner == uid) {
                self.by_ip.remove(&ip);
            }
        }
        remove_from_set(&mut self.by_node, &workload.node, uid);
        for service in workload.services.keys() {
            remove_from_set(&mut self.endpoints, service, uid);
        }
    }

    fn insert_service(&mut self, service: Service) {
        let key = service.key();
        for ip in &service.vips {
            self.by_vip.insert(ip.to_canonical(), key.clone());
        }
        self.services.insert(key, Arc::new(service));
    }

    fn remove_service(&mut self, key: &str) {
        let Some(service) = self.services.remove(key) else {
            return;
        };
        for ip in &service.vips {
            let ip = ip.to_canonical();
            if self.by_vip.get(&ip).is_some_and(|owner| owner == key) {
                self.by_vip.remove(&ip);
            }
        }
    }

    /// The workload whose address is `ip`.
    pub(super) fn workload_by_ip(&self, ip: IpAddr) -> Option<Arc<Workload>> {
        self.by_ip
            .get(&ip)
            .and_then(|uid| self.workloads.get(uid))
            .cloned()
    }

    /// The service whose VIP is `ip`.
    pub(super) fn service_by_vip(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.by_vip
            .get(&ip)
            .and_then(|key| self.services.get(key))
            .cloned()
    }

    /// Workloads on `node`, by uid.
    pub(super) fn workloads_on_node(&self, node: &str) -> Vec<Arc<Workload>> {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.workloads.get(uid).cloned())
            .collect()
    }

    /// Healthy endpoints of `service` for service port `port`, by workload uid.
    pub(super) fn endpoints(&self, service: &Service, port: u16) -> Vec<Endpoint> {
        let Some(&service_target) = service.ports.get(&port) else {
            return Vec::new();
        };
        let key = service.key();
        let Some(uids) = self.endpoints.get(&key) else {
            return Vec::new();
        };
        uids.iter()
            .filter_map(|uid| {
                let workload = self.workloads.get(uid)?;
                // A pod whose network is still being set up has no address to reach.
                if !workload.healthy || workload.addresses.is_empty() {
                    return None;
                }
                let target = workload
                    .services
                    .get(&key)?
                    .get(&port)
                    .copied()
                    .filter(|p| *p != 0)
                    .or((service_target != 0).then_some(service_target))?;
                Some(Endpoint {
                    workload: workload.clone(),
                    port: target,
                })
            })
            .collect()
    }

    /// Inserts (or replaces) the `Authorization` resource `name`.
    pub(super) fn insert_policy(&mut self, name: &str, policy: Policy) {
        self.remove_policy(name);
        let key = policy.key();
        // Another resource name carrying the same policy: the newer one wins.
        if let Some(other) = self.policy_owners.remove(&key) {
            self.policy_names.remove(&other);
            self.remove_policy_entries(&key);
        }
        match policy.scope {
            Scope::Global => {
                self.global_policies.insert(key.clone());
            }
            Scope::Namespace => {
                self.namespace_policies
                    .entry(policy.namespace.clone())
                    .or_default()
                    .insert(key.clone());
            }
            // Found through the workloads that name them.
            Scope::WorkloadSelector => {}
        }
        self.policies.insert(key.clone(), Arc::new(policy));
        self.policy_owners.insert(key.clone(), name.to_owned());
        self.policy_names.insert(name.to_owned(), key);
    }

    /// Removes the `Authorization` resource `name`; false if it was not known.
    pub(super) fn remove_policy(&mut self, name: &str) -> bool {
        let Some(key) = self.policy_names.remove(name) else {
            return false;
        };
        self.policy_owners.remove(&key);
        self.remove_policy_entries(&key);
        true
    }

    fn remove_policy_entries(&mut self, key: &str) {
        let Some(policy) = self.policies.remove(key) else {
            return;
        };
        match policy.scope {
            Scope::Global => {
                self.global_policies.remove(key);
            }
            Scope::Namespace => {
                remove_from_set(&mut self.namespace_policies, &policy.namespace, key)
            }
            Scope::WorkloadSelector => {}
        }
    }

    /// The policies that apply to `workload`: GLOBAL ones, NAMESPACE ones of its namespace and
    /// the selector policies it names. A name not (yet) known is skipped: the controller may
    /// send the workload before the policy.
    pub(super) fn policies_for(&self, workload: &Workload) -> Vec<&Policy> {
        let mut keys: BTreeSet<&str> = self.global_policies.iter().map(String::as_str).collect();
        keys.extend(
            self.namespace_policies
                .get(&workload.namespace)
                .into_iter()
                .flatten()
                .map(String::as_str),
        );
        keys.extend(workload.authorization_policies.iter().map(String::as_str));
        keys.into_iter()
            .filter_map(|key| {
                let policy = self.policies.get(key);
                if policy.is_none() {
                    tracing::debug!(policy = key, workload = %workload.uid, "unknown policy skipped");
                }
                policy.map(Arc::as_ref)
            })
            .collect()
    }
}

/// Whether `a` and `b` (two versions of one workload) look the same to authorization, which
/// reads of the destination only its namespace, addresses and selector policies: any other
/// change (health, services, waypoint, ...) leaves every decision as it was.
fn same_authorization_inputs(a: &Workload, b: &Workload) -> bool {
    a.namespace == b.namespace
        && a.addresses == b.addresses
        && a.authorization_policies == b.authorization_policies
}

/// Removes `value` from the set at `key`, dropping the set when it empties.
fn remove_from_set(map: &mut HashMap<String, BTreeSet<String>>, key: &str, value: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}
