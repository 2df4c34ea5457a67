//! The rows `meshctl stat` shows on the sandbox: its Deployments, Services or Namespaces,
//! with their pods and how many are in the mesh; the rows' figures are the shared model's
//! ([`crate::operator::stat`]).

use super::cluster::{Cluster, Pod};
use super::services::services;
pub use crate::operator::stat::Resource;
use crate::operator::stat::{DATAPLANE_MODE, Target, meshed, sorted};

/// The rows `stat` shows: every object of `resource` in `namespace` (all when `None`), or the
/// one called `name`, with their pods.
pub fn targets(
    cluster: &Cluster,
    resource: Resource,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Vec<Target> {
    let wanted = |ns: &str, object: &str| {
        namespace.is_none_or(|n| n == ns) && name.is_none_or(|n| n == object)
    };
    let target = |ns: &str, object: &str, pods: Vec<&Pod>| {
        Target::new(ns, object, pods.iter().map(|p| in_mesh(cluster, p)))
    };
    let found: Vec<Target> = match resource {
        Resource::Deployment => cluster
            .of_kind("Deployment")
            .filter_map(|a| Some((a.object.namespace.as_deref()?, a.object.name.as_str())))
            .filter(|(ns, object)| wanted(ns, object))
            .map(|(ns, object)| {
                let pods = cluster.pods.values().filter(|p| {
                    p.namespace == ns && p.owner.as_ref().is_some_and(|o| o.deployment == object)
                });
                target(ns, object, pods.collect())
            })
            .collect(),
        Resource::Service => services(cluster)
            .into_iter()
            .filter(|s| wanted(&s.namespace, &s.name))
            .map(|s| {
                let pods = cluster
                    .pods
                    .values()
                    .filter(|p| s.addresses.contains(&p.ip));
                target(&s.namespace, &s.name, pods.collect())
            })
            .collect(),
        Resource::Namespace => cluster
            .of_kind("Namespace")
            .map(|a| a.object.name.as_str())
            .filter(|ns| wanted(ns, ns))
            .map(|ns| {
                target(
                    ns,
                    ns,
                    cluster
                        .pods
                        .values()
                        .filter(|p| p.namespace == ns)
                        .collect(),
                )
            })
            .collect(),
    };
    sorted(found)
}

/// Whether `pod` is in the mesh, by its own label or its namespace's.
fn in_mesh(cluster: &Cluster, pod: &Pod) -> bool {
    let namespace_mode = cluster
        .of_kind("Namespace")
        .find(|a| a.object.name == pod.namespace)
        .and_then(|a| a.object.value["metadata"]["labels"][DATAPLANE_MODE].as_str());
    meshed(
        pod.labels.get(DATAPLANE_MODE).map(String::as_str),
        namespace_mode,
    )
}
