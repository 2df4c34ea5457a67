//! A Service by namespace and name: the key routes, bindings and waypoint policies share.

use std::collections::BTreeMap;

use api::waypoint::{Destination, WeightedDestination};

use super::options::service_hostname;

/// A Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// A key.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// `<name>.<namespace>.svc.cluster.local`.
    pub fn hostname(&self) -> String {
        service_hostname(&self.name, &self.namespace)
    }

    /// A destination for this service.
    pub fn destination(&self, port: u32, subset: &str) -> Destination {
        Destination {
            hostname: self.hostname(),
            namespace: self.namespace.clone(),
            port,
            subset: subset.to_string(),
            subset_labels: BTreeMap::new(),
        }
    }

    /// This service as the only destination.
    pub fn only_destination(&self) -> Vec<WeightedDestination> {
        vec![WeightedDestination {
            destination: Some(self.destination(0, "")),
            weight: 1,
            ..Default::default()
        }]
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
