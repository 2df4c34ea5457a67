//! What `meshctl tap` reads: requests (from waypoints), connections (from ztunnels) or both,
//! and which of them a target sees by default: requests when a waypoint serves it, since
//! only a waypoint sees them, else connections.

use std::collections::BTreeMap;

use controller::translate::USE_WAYPOINT;

use super::cluster::Cluster;
use super::objects::ServiceObject;
use super::services::selects;
use super::stat::Resource;

/// The events a tap shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapKind {
    /// HTTP requests, as waypoints see them.
    Request,
    /// TCP connections, as ztunnels see them.
    Connection,
    /// Both.
    All,
}

impl TapKind {
    /// Parses `request`, `connection` or `all`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "request" | "requests" => Ok(Self::Request),
            "connection" | "connections" => Ok(Self::Connection),
            "all" => Ok(Self::All),
            other => Err(format!("--kind {other}: use request, connection or all")),
        }
    }

    /// Whether waypoints are read.
    pub fn requests(self) -> bool {
        self != Self::Connection
    }

    /// Whether ztunnels are read.
    pub fn connections(self) -> bool {
        self != Self::Request
    }
}

/// The kind a tap of `name` (a Deployment or Service of `namespace`) shows by default:
/// requests when a waypoint serves it, connections otherwise.
pub fn default_kind(cluster: &Cluster, resource: Resource, name: &str, namespace: &str) -> TapKind {
    if served_by_waypoint(cluster, resource, name, namespace) {
        TapKind::Request
    } else {
        TapKind::Connection
    }
}

/// Whether traffic to the Service, or to a Service selecting the Deployment's pods, goes
/// through a waypoint: `istio.io/use-waypoint` on it (on the pods for a Deployment too),
/// else on its namespace; `none` opts out.
pub fn served_by_waypoint(
    cluster: &Cluster,
    resource: Resource,
    name: &str,
    namespace: &str,
) -> bool {
    let bound = |labels: &BTreeMap<String, String>| {
        labels
            .get(USE_WAYPOINT)
            .map(|waypoint| !waypoint.is_empty() && waypoint != "none")
    };
    let namespace_bound = cluster
        .of_kind("Namespace")
        .find(|a| a.object.name == namespace)
        .and_then(|a| bound(&a.object.labels()))
        .unwrap_or(false);
    let services = cluster
        .of_kind("Service")
        .filter(|a| a.object.namespace.as_deref() == Some(namespace));
    match resource {
        Resource::Service => services
            .filter(|a| a.object.name == name)
            .any(|a| bound(&a.object.labels()).unwrap_or(namespace_bound)),
        Resource::Deployment => {
            let pods: Vec<&BTreeMap<String, String>> = cluster
                .pods
                .values()
                .filter(|p| p.namespace == namespace)
                .filter(|p| p.owner.as_ref().is_some_and(|o| o.deployment == name))
                .map(|p| &p.labels)
                .collect();
            pods.iter().any(|labels| bound(labels) == Some(true))
                || services.into_iter().any(|a| {
                    let selector = a
                        .object
                        .typed::<ServiceObject>()
                        .ok()
                        .and_then(|s| s.spec.selector)
                        .filter(|s| !s.is_empty());
                    selector.is_some_and(|sel| pods.iter().any(|labels| selects(&sel, labels)))
                        && bound(&a.object.labels()).unwrap_or(namespace_bound)
                })
        }
        Resource::Namespace => namespace_bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::manifest::parse_documents;

    fn cluster(yaml: &str) -> Cluster {
        let mut cluster = Cluster::new("t", 1, 0);
        for object in parse_documents(yaml, "test.yaml").unwrap() {
            cluster
                .objects
                .push(crate::sandbox::model::cluster::Applied { object, created: 0 });
        }
        cluster
    }

    const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: orders, namespace: shop, labels: {istio.io/use-waypoint: waypoint}}\n\
        spec: {selector: {app: orders}, ports: [{port: 80}]}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: carts, namespace: shop}\n\
        spec: {selector: {app: carts}, ports: [{port: 80}]}\n";

    #[test]
    fn services_bound_to_a_waypoint_default_to_requests_the_rest_to_connections() {
        let shop = cluster(SHOP);
        let kind = |name| default_kind(&shop, Resource::Service, name, "shop");
        assert_eq!(kind("orders"), TapKind::Request);
        assert_eq!(kind("carts"), TapKind::Connection);
        assert_eq!(kind("missing"), TapKind::Connection);
        let labelled = SHOP.replace(
            "metadata: {name: shop}",
            "metadata: {name: shop, labels: {istio.io/use-waypoint: waypoint}}",
        );
        let labelled = cluster(&labelled);
        assert_eq!(
            default_kind(&labelled, Resource::Service, "carts", "shop"),
            TapKind::Request,
            "the namespace's label binds its services"
        );
        assert_eq!(
            default_kind(&shop, Resource::Deployment, "orders", "shop"),
            TapKind::Connection,
            "no pods of the deployment: nothing selects them"
        );
    }

    #[test]
    fn kinds_parse_and_say_what_they_read() {
        assert_eq!(TapKind::parse("connection"), Ok(TapKind::Connection));
        assert!(TapKind::parse("packets").is_err());
        assert!(TapKind::All.requests() && TapKind::All.connections());
        assert!(!TapKind::Request.connections() && !TapKind::Connection.requests());
    }
}
