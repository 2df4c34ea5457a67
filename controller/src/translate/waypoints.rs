//! Waypoints: Gateways of class `istio-waypoint`, and which services and
//! workloads use them (`istio.io/use-waypoint`).

use std::collections::BTreeMap;

use api::workload::{GatewayAddress, NamespacedHostname, gateway_address};

use super::options::service_hostname;
use crate::model::{Index, ObjectMeta, Problem};

/// Gateway class that marks a waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// Label naming the waypoint an object (or a namespace's objects) uses.
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
/// Label naming the waypoint's namespace, when it is not the object's own.
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
/// Gateway label choosing the traffic a waypoint handles.
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
/// Label that Gateway API implementations put on a gateway's pods.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
pub use crate::model::XFCC_ANNOTATION;
/// HBONE port of waypoints.
pub const HBONE_PORT: u32 = 15008;

/// The traffic a waypoint handles (`istio.io/waypoint-for`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaypointFor {
    /// Traffic addressed to services (the default).
    Service,
    /// Traffic addressed to workloads directly.
    Workload,
    /// Both.
    All,
    /// Neither (the waypoint exists but is not used by ztunnel).
    None,
}

impl WaypointFor {
    fn services(self) -> bool {
        matches!(self, WaypointFor::Service | WaypointFor::All)
    }
    fn workloads(self) -> bool {
        matches!(self, WaypointFor::Workload | WaypointFor::All)
    }
}

/// One waypoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waypoint {
    /// Namespace of the Gateway.
    pub namespace: String,
    /// Name of the Gateway (and of its Service).
    pub name: String,
    /// Traffic it handles.
    pub for_: WaypointFor,
    /// Whether it sets `x-forwarded-client-cert` from the caller's identity
    /// ([`XFCC_ANNOTATION`]).
    pub xfcc_include_client_identity: bool,
}

impl Waypoint {
    fn address(&self) -> GatewayAddress {
        GatewayAddress {
            destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
                namespace: self.namespace.clone(),
                hostname: service_hostname(&self.name, &self.namespace),
            })),
            hbone_mtls_port: HBONE_PORT,
        }
    }
}

/// All waypoints, by (namespace, name).
#[derive(Clone, Debug, Default)]
pub struct Waypoints {
    by_key: BTreeMap<(String, String), Waypoint>,
}

/// What kind of object asks for a waypoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Asker {
    Service,
    Workload,
}

impl Waypoints {
    /// Finds the waypoints of `index`.
    pub(super) fn collect(index: &Index, problems: &mut Vec<Problem>) -> Self {
        let mut by_key = BTreeMap::new();
        for (origin, gw) in index.gateways() {
            if gw.spec.gateway_class_name != WAYPOINT_CLASS {
                continue;
            }
            let m = &gw.metadata;
            // Istio reads the label from the Gateway, or from the labels it
            // propagates to the generated resources.
            let label = m.labels.get(WAYPOINT_FOR).or_else(|| {
                gw.spec
                    .infrastructure
                    .as_ref()
                    .and_then(|i| i.labels.get(WAYPOINT_FOR))
            });
            let for_ = match label.map(String::as_str) {
                None | Some("service") => WaypointFor::Service,
                Some("workload") => WaypointFor::Workload,
                Some("all") => WaypointFor::All,
                Some("none") => WaypointFor::None,
                Some(other) => {
                    problems.push(
                        Problem::new(origin, "Gateway", &m.namespace, &m.name)
                            .field(format!("metadata.labels[{WAYPOINT_FOR}]"))
                            .message(format!(
                                "unknown value {other:?} (service, workload, all, none); using service"
                            )),
                    );
                    WaypointFor::Service
                }
            };
            let xfcc_include_client_identity = match m.annotations.get(XFCC_ANNOTATION) {
                None => false,
                // Exactly "true" or "false", as Istio reads it (and as `bool` parses).
                Some(value) => value.parse().unwrap_or_else(|_| {
                    problems.push(
                        Problem::new(origin, "Gateway", &m.namespace, &m.name)
                            .field(format!("metadata.annotations[{XFCC_ANNOTATION}]"))
                            .message(format!(
                                "unknown value {value:?} (\"true\" or \"false\"); \
                                 x-forwarded-client-cert is not set"
                            )),
                    );
                    false
                }),
            };
            by_key.insert(
                (m.namespace.clone(), m.name.clone()),
                Waypoint {
                    namespace: m.namespace.clone(),
                    name: m.name.clone(),
                    for_,
                    xfcc_include_client_identity,
                },
            );
        }
        Self { by_key }
    }

    /// The waypoint called `name` in `namespace`.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Waypoint> {
        self.by_key.get(&(namespace.to_string(), name.to_string()))
    }

    /// True when the object is part of a waypoint (its pods or its Service):
    /// a waypoint never sends its own traffic through a waypoint.
    pub(super) fn is_part_of_waypoint(&self, meta: &ObjectMeta, asker: Asker) -> bool {
        let by_label = meta
            .labels
            .get(GATEWAY_NAME_LABEL)
            .is_some_and(|gw| self.get(&meta.namespace, gw).is_some());
        let by_name = asker == Asker::Service && self.get(&meta.namespace, &meta.name).is_some();
        by_label || by_name
    }

    /// Every waypoint, ordered by namespace and name.
    pub fn iter(&self) -> impl Iterator<Item = &Waypoint> {
        self.by_key.values()
    }

    /// The waypoint address for a service or workload, following
    /// `istio.io/use-waypoint` on the object, else on its namespace.
    pub(super) fn for_object(
        &self,
        index: &Index,
        origin: &str,
        kind: &str,
        meta: &ObjectMeta,
        asker: Asker,
        problems: &mut Vec<Problem>,
    ) -> Option<GatewayAddress> {
        self.waypoint_for(index, origin, kind, meta, asker, problems)
            .map(Waypoint::address)
    }

    /// The waypoint a service or workload uses, following
    /// `istio.io/use-waypoint` on the object, else on its namespace.
    pub(super) fn waypoint_for(
        &self,
        index: &Index,
        origin: &str,
        kind: &str,
        meta: &ObjectMeta,
        asker: Asker,
        problems: &mut Vec<Problem>,
    ) -> Option<&Waypoint> {
        if self.is_part_of_waypoint(meta, asker) {
            return None;
        }
        let (labels, label_origin, label_kind, label_ns, label_name) =
            if meta.labels.contains_key(USE_WAYPOINT) {
                (
                    &meta.labels,
                    origin,
                    kind,
                    meta.namespace.as_str(),
                    meta.name.as_str(),
                )
            } else {
                let ns = index.get(&crate::model::ObjectKey::new(
                    "Namespace",
                    "",
                    &meta.namespace,
                ))?;
                let labels = &ns.object.metadata().labels;
                (
                    labels,
                    ns.origin.as_str(),
                    "Namespace",
                    "",
                    meta.namespace.as_str(),
                )
            };
        let name = labels.get(USE_WAYPOINT)?;
        if name == "none" || name.is_empty() {
            return None;
        }
        let namespace = labels
            .get(USE_WAYPOINT_NAMESPACE)
            .map(String::as_str)
            .unwrap_or(&meta.namespace);
        let Some(waypoint) = self.get(namespace, name) else {
            problems.push(
                Problem::new(label_origin, label_kind, label_ns, label_name)
                    .field(format!("metadata.labels[{USE_WAYPOINT}]"))
                    .message(format!(
                        "no waypoint Gateway {namespace}/{name} (class {WAYPOINT_CLASS}); traffic goes direct"
                    )),
            );
            return None;
        };
        let wanted = match asker {
            Asker::Service => waypoint.for_.services(),
            Asker::Workload => waypoint.for_.workloads(),
        };
        wanted.then_some(waypoint)
    }
}
