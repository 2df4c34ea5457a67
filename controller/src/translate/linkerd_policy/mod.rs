//! Linkerd's authorization policy (`Server`, `AuthorizationPolicy`, `MeshTLSAuthentication`,
//! `NetworkAuthentication` of `policy.linkerd.io`, HTTPRoutes whose parent is a Server, and
//! the `config.linkerd.io/default-inbound-policy` annotation) → `istio.security.Authorization`
//! DENY resources that ztunnel enforces at L4, one per Server (`linkerd_server_<name>`) and
//! per default policy (`linkerd_default_<policy>[_except_<guarded ports>]`), referenced by the
//! workloads of the pods they concern; and, for pods a waypoint serves, the same rules as
//! DENY policies of that waypoint (see `waypoint`), enforced with the client's own identity.
//!
//! A port a Server selects is refused to every client that no AuthorizationPolicy targeting the
//! Server (or its Namespace) admits, nor its `accessPolicy` (v1beta3, `deny` by default); the
//! other ports follow the pod's default inbound policy (Linkerd's cluster default,
//! all-unauthenticated, when neither the pod nor its namespace is annotated: nothing is
//! added). Where a waypoint serves the pod, ztunnel also admits the waypoint's identity (it
//! has judged the client), and the waypoint enforces the routes: a request matching a route is
//! admitted by the route's policies or the Server's, a request matching none is answered 404.
//! Route policies need HTTP: where no waypoint serves the pods they admit no client, and the
//! Server says so.

mod decode;
mod defs;
mod identity;
mod objects;
mod pods;
mod rate_limit;
mod routes;
mod rules;
mod service_ports;
mod waypoint;

use std::collections::{BTreeMap, BTreeSet};

pub(crate) use objects::Memory;
pub(crate) use waypoint::AtWaypointConfig;

use super::authorization::Policy;
use super::bindings::{Bindings, WaypointKey, waypoint_identities, workload_uid};
use super::options::TranslateOptions;
use crate::model::{Index, Problem, WARNING_PREFIX};

/// What the Linkerd policy translates to.
#[derive(Debug, Default)]
pub(crate) struct Translated {
    /// The policies ztunnel enforces.
    pub policies: Vec<Policy>,
    /// What each waypoint enforces.
    pub waypoints: BTreeMap<WaypointKey, AtWaypointConfig>,
}

/// The waypoints serving each pod, with the identities they connect with.
fn behind(
    index: &Index,
    options: &TranslateOptions,
    bindings: &Bindings,
) -> BTreeMap<(String, String), Vec<pods::Via>> {
    let mut out = BTreeMap::new();
    for (_, pod) in index.pods() {
        let uid = workload_uid(&options.cluster_id, pod);
        let Some(waypoints) = bindings.workloads.get(&uid) else {
            continue;
        };
        let vias = waypoints
            .iter()
            .map(|w| pods::Via {
                waypoint: w.clone(),
                identities: waypoint_identities(index, w, &options.trust_domain),
            })
            .collect();
        let m = &pod.metadata;
        out.insert((m.namespace.clone(), m.name.clone()), vias);
    }
    out
}

/// Translates the Linkerd policy of `index` into policies ztunnel and waypoints enforce.
pub(crate) fn translate(
    index: &Index,
    options: &TranslateOptions,
    bindings: &Bindings,
    memory: &mut Memory,
    problems: &mut Vec<Problem>,
) -> Translated {
    let objects = objects::collect(index, &options.trust_domain, memory, problems);
    let cluster = identity::cluster_networks(&options.cluster_networks);
    let behind = behind(index, options, bindings);
    let inputs = pods::Inputs {
        index,
        objects: &objects,
        cluster: &cluster,
        behind: &behind,
        cluster_id: &options.cluster_id,
    };
    let per_pod = pods::resources(&inputs, problems);
    problems.extend(unserved_routes(&objects, &per_pod.unserved));
    problems.extend(unserved_rate_limits(&objects, &per_pod.unserved));
    let waypoints = waypoint::policies(&objects, per_pod.at_waypoints, problems);
    let policies = per_pod
        .ztunnel
        .into_values()
        .map(|(auth, pods)| Policy {
            auth,
            selector: None,
            mesh_wide: false,
            l7_warning: None,
            warning: None,
            pods: Some(pods),
        })
        .collect();
    Translated {
        policies,
        waypoints,
    }
}

/// A warning for each Server with routes whose pods a waypoint does not serve: there the
/// route policies (HTTP) admit no client.
fn unserved_routes(
    objects: &objects::Objects,
    unserved: &BTreeMap<(String, String), BTreeSet<String>>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for ((ns, server), pods) in unserved {
        let routes: Vec<&str> = objects
            .routes
            .get(ns)
            .into_iter()
            .flatten()
            .filter(|r| r.servers.contains(server))
            .map(|r| r.name.as_str())
            .collect();
        let Some(def) = objects
            .servers
            .get(ns)
            .and_then(|s| s.iter().find(|s| &s.name == server))
        else {
            continue;
        };
        if routes.is_empty() {
            continue;
        }
        let pods: Vec<&str> = pods.iter().map(String::as_str).collect();
        out.push(
            Problem::new(&def.origin, "Server", ns, server).message(format!(
                "{WARNING_PREFIX}its HTTPRoutes ({}) are enforced at a waypoint only, and no \
                 waypoint serves the pods {}: there, the policies targeting the routes admit \
                 no client at L4 (fail closed); add a waypoint (label the pods' Service \
                 istio.io/use-waypoint) to enforce them",
                routes.join(", "),
                pods.join(", ")
            )),
        );
    }
    out
}

/// A warning for each rate limit of a Server whose pods a waypoint does not serve: there it is
/// not enforced (ztunnel sees no requests).
fn unserved_rate_limits(
    objects: &objects::Objects,
    unserved: &BTreeMap<(String, String), BTreeSet<String>>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for (key, pods) in unserved {
        let Some(def) = objects.rate_limits.get(key) else {
            continue;
        };
        let pods: Vec<&str> = pods.iter().map(String::as_str).collect();
        out.push(
            Problem::new(&def.origin, rate_limit::KIND, &key.0, &def.name)
                .field("spec.targetRef")
                .message(format!(
                    "{WARNING_PREFIX}rate limits are enforced at a waypoint only, and no waypoint \
                     serves the pods {} of the Server {}: their requests are not limited; add \
                     a waypoint (label the pods' Service istio.io/use-waypoint)",
                    pods.join(", "),
                    key.1
                )),
        );
    }
    out
}
