//! Which services and workloads are reached through which waypoint: the
//! services a waypoint serves (its configuration), and the waypoints whose
//! traffic a workload must admit (its ztunnel policy, waypoint-enforced
//! authorization).

use std::collections::{BTreeMap, BTreeSet};

use super::labels::selects;
use super::service_key::ServiceKey;
use super::waypoints::{Asker, GATEWAY_NAME_LABEL, Waypoint, Waypoints};
use crate::model::{Index, Pod};

/// A waypoint, by Gateway namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct WaypointKey {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway.
    pub name: String,
}

impl WaypointKey {
    /// The key of `w`.
    pub fn of(w: &Waypoint) -> Self {
        Self {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
        }
    }

    /// `<namespace>/<name>`, the name of its configuration resource.
    pub fn resource_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Services and workloads by the waypoint they use.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bindings {
    /// Service → the waypoint serving it.
    pub services: BTreeMap<ServiceKey, WaypointKey>,
    /// Workload uid → the waypoints whose traffic reaches it: its own
    /// (workload traffic) and those of the services selecting it.
    pub workloads: BTreeMap<String, BTreeSet<WaypointKey>>,
}

impl Bindings {
    /// Computes the bindings. Problems with the labels are reported by the
    /// service and workload translations, not here.
    pub fn collect(index: &Index, waypoints: &Waypoints, cluster_id: &str) -> Self {
        let mut scratch = Vec::new();
        let mut out = Bindings::default();
        for (origin, svc) in index.services() {
            let m = &svc.metadata;
            if let Some(w) =
                waypoints.waypoint_for(index, origin, "Service", m, Asker::Service, &mut scratch)
            {
                out.services
                    .insert(ServiceKey::new(&m.namespace, &m.name), WaypointKey::of(w));
            }
        }
        for (origin, pod) in index.pods() {
            let m = &pod.metadata;
            let mut set = BTreeSet::new();
            if let Some(w) =
                waypoints.waypoint_for(index, origin, "Pod", m, Asker::Workload, &mut scratch)
            {
                set.insert(WaypointKey::of(w));
            }
            for (_, svc) in index.services() {
                let selected = svc.metadata.namespace == m.namespace
                    && svc
                        .spec
                        .selector
                        .as_ref()
                        .is_some_and(|s| !s.is_empty() && selects(s, &m.labels));
                let key = ServiceKey::new(&svc.metadata.namespace, &svc.metadata.name);
                if let (true, Some(w)) = (selected, out.services.get(&key)) {
                    set.insert(w.clone());
                }
            }
            if !set.is_empty() {
                out.workloads.insert(workload_uid(cluster_id, pod), set);
            }
        }
        out
    }

    /// Services `waypoint` serves, ordered.
    pub fn served_by<'a>(
        &'a self,
        waypoint: &'a WaypointKey,
    ) -> impl Iterator<Item = &'a ServiceKey> {
        self.services
            .iter()
            .filter(move |(_, w)| *w == waypoint)
            .map(|(s, _)| s)
    }
}

/// The workload API uid of a pod.
pub(crate) fn workload_uid(cluster_id: &str, pod: &Pod) -> String {
    format!(
        "{cluster_id}//Pod/{}/{}",
        pod.metadata.namespace, pod.metadata.name
    )
}

/// Identities a waypoint's proxies present, without `spiffe://`: the service
/// accounts of its pods, or (before it has pods) the account named after the
/// Gateway, as waypoint deployments use.
pub(crate) fn waypoint_identities(
    index: &Index,
    w: &WaypointKey,
    trust_domain: &str,
) -> Vec<String> {
    let mut accounts: Vec<String> = index
        .pods()
        .filter(|(_, p)| {
            p.metadata.namespace == w.namespace
                && p.metadata.labels.get(GATEWAY_NAME_LABEL) == Some(&w.name)
        })
        .map(|(_, p)| p.service_account().to_string())
        .collect();
    if accounts.is_empty() {
        accounts.push(w.name.clone());
    }
    accounts.sort();
    accounts.dedup();
    accounts
        .into_iter()
        .map(|sa| format!("{trust_domain}/ns/{}/sa/{sa}", w.namespace))
        .collect()
}
