//! Linkerd's authorization policy (`Server`, `AuthorizationPolicy`, `MeshTLSAuthentication`,
//! `NetworkAuthentication` of `policy.linkerd.io`, and the
//! `config.linkerd.io/default-inbound-policy` annotation) → `istio.security.Authorization`
//! DENY resources that ztunnel enforces at L4, one per Server (`linkerd_server_<name>`) and
//! per default policy (`linkerd_default_<policy>[_except_<guarded ports>]`), referenced by the
//! workloads of the pods they concern.
//!
//! A port a Server selects is refused to every client that no AuthorizationPolicy targeting the
//! Server (or its Namespace) admits, nor its `accessPolicy` (v1beta3, `deny` by default); the
//! other ports follow the pod's default inbound policy (Linkerd's cluster default,
//! all-unauthenticated, when neither the pod nor its namespace is annotated: nothing is
//! added). Route-level (L7) policies are reported and admit nothing.

mod decode;
mod defs;
mod identity;
mod objects;
mod pods;
mod rules;

pub(crate) use objects::Memory;

use super::authorization::Policy;
use super::bindings::{Bindings, workload_uid};
use super::options::TranslateOptions;
use crate::model::{Index, Problem, WARNING_PREFIX};

/// Translates the Linkerd policy of `index` into policies ztunnel enforces.
pub(crate) fn translate(
    index: &Index,
    options: &TranslateOptions,
    memory: &mut Memory,
    problems: &mut Vec<Problem>,
) -> Vec<Policy> {
    let objects = objects::collect(index, &options.trust_domain, memory, problems);
    let cluster = identity::cluster_networks(&options.cluster_networks);
    let inputs = pods::Inputs {
        index,
        objects: &objects,
        cluster: &cluster,
    };
    pods::resources(&inputs, problems)
        .into_values()
        .map(|(auth, pods)| Policy {
            auth,
            selector: None,
            mesh_wide: false,
            l7_warning: None,
            warning: None,
            pods: Some(pods),
        })
        .collect()
}

/// A warning for each pod with Linkerd rules that a waypoint reaches: ztunnel sees those
/// connections with the waypoint's identity, and the rules are not enforced at the waypoint.
pub(crate) fn behind_waypoints(
    index: &Index,
    policies: &[Policy],
    bindings: &Bindings,
    cluster_id: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for (origin, pod) in index.pods() {
        let uid = workload_uid(cluster_id, pod);
        let Some(waypoints) = bindings.workloads.get(&uid) else {
            continue;
        };
        let rules: Vec<String> = policies
            .iter()
            .filter(|p| p.pods.is_some() && p.applies_to(pod))
            .map(Policy::reference)
            .collect();
        if rules.is_empty() {
            continue;
        }
        let through: Vec<String> = waypoints
            .iter()
            .map(|w| format!("{}/{}", w.namespace, w.name))
            .collect();
        let m = &pod.metadata;
        out.push(
            Problem::new(origin, "Pod", &m.namespace, &m.name).message(format!(
                "{WARNING_PREFIX}Linkerd's policy ({}) is enforced by ztunnel only, where \
                 requests through the waypoint ({}) arrive with the waypoint's identity: they \
                 are refused unless that identity is authorized",
                rules.join(", "),
                through.join(", ")
            )),
        );
    }
    out
}
