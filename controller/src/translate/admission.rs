//! Waypoint admission at ztunnel, as Istio does it: one ALLOW policy per
//! waypoint (`istio_allow_waypoint_<ns>_<name>`, in the waypoint's
//! namespace) matching the waypoint's identities, referenced by the
//! workloads reached through that waypoint.
//!
//! Traffic relayed by a waypoint reaches the workload's ztunnel with the
//! waypoint's identity, not the caller's; the waypoint has already enforced
//! the caller's policies. A workload is only given the reference when ALLOW
//! policies apply to it at ztunnel: where none do, everything is admitted
//! anyway, and an ALLOW policy of its own would turn that into "waypoint
//! only".

use std::collections::BTreeMap;

use api::security::{
    Action, Authorization, Clause, Match, Rule, Scope, StringMatch, string_match::MatchType,
};

use super::authorization::Policy;
use super::bindings::{Bindings, WaypointKey, waypoint_identities, workload_uid};
use super::options::TranslateOptions;
use crate::model::{Index, Pod};

/// Prefix of the per-waypoint admission policies (underscores cannot clash
/// with Kubernetes names).
pub const ALLOW_WAYPOINT_PREFIX: &str = "istio_allow_waypoint_";

/// The admission policies and which workloads reference them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Admission {
    /// Policies to serve.
    pub policies: Vec<Authorization>,
    /// Workload uid → references (`<ns>/<name>`) to add to the workload.
    pub references: BTreeMap<String, Vec<String>>,
}

/// The name of a waypoint's admission policy.
pub fn allow_waypoint_name(w: &WaypointKey) -> String {
    format!("{ALLOW_WAYPOINT_PREFIX}{}_{}", w.namespace, w.name)
}

/// Computes admission for every workload reached through a waypoint.
pub(crate) fn admission(
    index: &Index,
    options: &TranslateOptions,
    bindings: &Bindings,
    policies: &[Policy],
) -> Admission {
    let mut out = Admission::default();
    let mut used: BTreeMap<WaypointKey, ()> = BTreeMap::new();
    for (_, pod) in index.pods() {
        let uid = workload_uid(&options.cluster_id, pod);
        let Some(waypoints) = bindings.workloads.get(&uid) else {
            continue;
        };
        if !policies.iter().any(|p| allows_apply(p, pod)) {
            continue;
        }
        let refs = waypoints
            .iter()
            .map(|w| {
                used.insert(w.clone(), ());
                format!("{}/{}", w.namespace, allow_waypoint_name(w))
            })
            .collect();
        out.references.insert(uid, refs);
    }
    for w in used.into_keys() {
        let principals = waypoint_identities(index, &w, &options.trust_domain)
            .into_iter()
            .map(|id| StringMatch {
                match_type: Some(MatchType::Exact(id)),
            })
            .collect();
        out.policies.push(Authorization {
            name: allow_waypoint_name(&w),
            namespace: w.namespace.clone(),
            // Applied by reference from the workloads, like selector policies.
            scope: Scope::WorkloadSelector as i32,
            action: Action::Allow as i32,
            rules: vec![Rule {
                clauses: vec![Clause {
                    matches: vec![Match {
                        principals,
                        ..Default::default()
                    }],
                }],
            }],
            dry_run: false,
        });
    }
    out
}

/// True when `p` is an ALLOW policy ztunnel applies to `pod`.
fn allows_apply(p: &Policy, pod: &Pod) -> bool {
    p.auth.action == Action::Allow as i32 && p.applies_to(pod)
}
