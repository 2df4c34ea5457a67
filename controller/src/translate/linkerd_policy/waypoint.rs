//! The guards of pods a waypoint serves, enforced there with the client's own identity, as
//! DENY authorization policies of the waypoint scoped to those pods (Istio's L7 rules:
//! paths, methods, headers, principals, addresses, ports):
//!
//! - `linkerd_server_<server>...` (403): on the guarded ports, a request no alternative admits;
//!   with inbound routes, a request matching a route that neither the route's policies nor
//!   the Server's (or the Namespace's) admit.
//! - `linkerd_server_<server>..._no_route` (404, the wire format's `not_found`): on a Server
//!   with routes, a request no route matches, as Linkerd's proxy answers it.
//! - `linkerd_default_...` (403): the default inbound policy on the other ports.
//!
//! A Server's HTTPLocalRateLimitPolicy becomes a `WorkloadRateLimit` of the same pods.
//!
//! Being DENY policies, they never admit what an Istio policy refuses. A request matching
//! several routes is judged by the first in the Gateway API's precedence, as Linkerd does: each
//! match's rule excludes the overlapping matches before it (when that takes too many rules, it
//! does not, which is stricter, with a warning). Ports are matched as the waypoint sees them, the service ports targeting the pod's
//! port and the pod's port itself (a request to the pod's address).

use std::collections::{BTreeMap, BTreeSet};

use api::security::{Address, StringMatch as L4Match, string_match::MatchType};
use api::waypoint::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition, ConditionKey, IpBlock,
    Operation, PolicyScope, StringMatch, WorkloadRateLimit, WorkloadSelector, string_match::Kind,
};

use super::defs::{Alternatives, Requirement, Target};
use super::objects::Objects;
use super::pods::AtWaypoint;
use super::routes::{self, MatchDef, RouteDef};
use super::rules::Ports;
use crate::model::{Problem, WARNING_PREFIX};
use crate::translate::bindings::WaypointKey;

/// Most rules one policy may expand to; beyond it the guarded ports are refused to every
/// request (fail closed) and a problem says so.
const MAX_RULES: usize = 64;

/// Suffix of the policy answering 404 to requests no route matches.
pub const NO_ROUTE_SUFFIX: &str = "_no_route";

/// The ports of both (of the same kind; differing kinds keep the first).
fn merged(a: &Ports, b: &Ports) -> Ports {
    let union = |x: &[u16], y: &[u16]| {
        let set: BTreeSet<u16> = x.iter().chain(y).copied().collect();
        set.into_iter().collect()
    };
    match (a, b) {
        (Ports::Only(x), Ports::Only(y)) => Ports::Only(union(x, y)),
        (Ports::Except(x), Ports::Except(y)) => Ports::Except(union(x, y)),
        _ => a.clone(),
    }
}

/// The same guard of several pods behind one waypoint.
struct Group {
    at: AtWaypoint,
    uids: BTreeSet<String>,
}

fn ip_block(a: &Address) -> IpBlock {
    IpBlock {
        address: a.address.clone(),
        prefix_len: a.length,
    }
}

fn string(m: &L4Match) -> Option<StringMatch> {
    let kind = match m.match_type.clone()? {
        MatchType::Exact(s) => Kind::Exact(s),
        MatchType::Prefix(s) => Kind::Prefix(s),
        MatchType::Suffix(s) => Kind::Suffix(s),
        MatchType::Presence(()) => Kind::Present(()),
    };
    Some(StringMatch {
        kind: Some(kind),
        ignore_case: false,
    })
}

/// The condition of a client that does not meet `r`.
fn failing(r: &Requirement) -> Condition {
    match r {
        Requirement::Principal(p) => Condition {
            key: ConditionKey::SourcePrincipal as i32,
            not_values: p.iter().filter_map(string).collect(),
            ..Condition::default()
        },
        Requirement::Network(n) => Condition {
            key: ConditionKey::SourceIp as i32,
            not_ip_values: n.iter().map(ip_block).collect(),
            ..Condition::default()
        },
    }
}

/// The ways a client fails every alternative, each a set of conditions that must all hold:
/// `None` when some alternative admits everybody; `Err` beyond [`MAX_RULES`].
fn failing_all(alternatives: &Alternatives) -> Result<Option<Vec<Vec<Condition>>>, ()> {
    let live: Vec<_> = alternatives
        .iter()
        .filter(|a| !a.iter().any(Requirement::admits_nobody))
        .collect();
    if live.iter().any(|a| a.is_empty()) {
        return Ok(None);
    }
    // Failing every alternative: failing one requirement of each.
    let mut ways: Vec<Vec<Condition>> = vec![Vec::new()];
    for a in live {
        if ways.len() * a.len() > MAX_RULES {
            return Err(());
        }
        ways = ways
            .iter()
            .flat_map(|w| {
                a.iter().map(move |r| {
                    let mut w = w.clone();
                    w.push(failing(r));
                    w
                })
            })
            .collect();
    }
    Ok(Some(ways))
}

fn port_condition(on: &Ports) -> Option<Condition> {
    let ports = |list: &[u16]| list.iter().map(|p| u32::from(*p)).collect();
    match on {
        Ports::Only(list) => Some(Condition {
            key: ConditionKey::DestinationPort as i32,
            port_values: ports(list),
            ..Condition::default()
        }),
        Ports::Except(list) if list.is_empty() => None,
        Ports::Except(list) => Some(Condition {
            key: ConditionKey::DestinationPort as i32,
            not_port_values: ports(list),
            ..Condition::default()
        }),
    }
}

/// A way for a request to fail matches: negated paths and methods, negated headers.
type Negation = (Operation, Vec<Condition>);

/// Policies of one group: (name, rules, answered 404).
type Made = Vec<(String, Vec<AuthorizationRule>, bool)>;

/// The requests matching none of `matches`, one (operation, conditions) per way of failing
/// each match (one of its parts negated): `None` when a match takes every request (no request
/// fails it); `Err` beyond [`MAX_RULES`].
fn negations(matches: &[&MatchDef]) -> Result<Option<Vec<Negation>>, ()> {
    let mut ways: Vec<Negation> = vec![Default::default()];
    for m in matches {
        if m.is_empty() {
            return Ok(None);
        }
        if ways.len() * m.len() > MAX_RULES {
            return Err(());
        }
        ways = ways
            .iter()
            .flat_map(|(op, when)| {
                m.iter().map(move |part| {
                    let (mut op, mut when) = (op.clone(), when.clone());
                    routes::negate_into(part, &mut op, &mut when);
                    (op, when)
                })
            })
            .collect();
    }
    Ok(Some(ways))
}

/// What one group's policies are made of.
struct Parts<'a> {
    objects: &'a Objects,
    namespace: &'a str,
    port: Option<Condition>,
}

impl Parts<'_> {
    fn rule(&self, to: Option<Operation>, mut when: Vec<Condition>) -> AuthorizationRule {
        when.extend(self.port.clone());
        AuthorizationRule {
            from: Vec::new(),
            // An operation without conditions matches every request: left out.
            to: to
                .filter(|op| *op != Operation::default())
                .into_iter()
                .collect(),
            when,
        }
    }

    /// The rules refusing the requests matching `m` but none of `higher` (the matches that
    /// take precedence) that no alternative admits. When excluding `higher` takes too many
    /// rules, they are not excluded (stricter: such a request must also satisfy `m`'s
    /// policies) and `stricter` is set.
    fn refusing(
        &self,
        m: &MatchDef,
        higher: &[&MatchDef],
        alternatives: &Alternatives,
        stricter: &mut bool,
    ) -> Result<Vec<AuthorizationRule>, ()> {
        let Some(ways) = failing_all(alternatives)? else {
            return Ok(Vec::new());
        };
        let exclusions = match negations(higher) {
            Ok(Some(e)) if e.len() * ways.len() <= MAX_RULES => e,
            // A higher match takes every request: `m` judges none.
            Ok(None) => return Ok(Vec::new()),
            _ => {
                *stricter = true;
                vec![Default::default()]
            }
        };
        let (op, headers) = routes::positive(m);
        let mut out = Vec::new();
        for (not_op, not_when) in &exclusions {
            let mut op = op.clone();
            op.not_paths.extend(not_op.not_paths.iter().cloned());
            op.not_methods.extend(not_op.not_methods.iter().cloned());
            for way in &ways {
                let mut when = headers.clone();
                when.extend(not_when.iter().cloned());
                when.extend(way.iter().cloned());
                out.push(self.rule(Some(op.clone()), when));
            }
        }
        Ok(out)
    }

    /// The rules matching the requests no match of `matches` matches.
    fn missing(&self, matches: &[&MatchDef]) -> Result<Vec<AuthorizationRule>, ()> {
        Ok(negations(matches)?
            .unwrap_or_default()
            .into_iter()
            .map(|(op, when)| self.rule(Some(op), when))
            .collect())
    }

    /// The alternatives of the policies targeting `route`.
    fn route_alternatives(&self, route: &str) -> Alternatives {
        let policies = self.objects.policies.get(self.namespace);
        policies
            .into_iter()
            .flatten()
            .filter(|p| p.target == Target::Route(route.to_owned()))
            .map(|p| p.required.clone())
            .collect()
    }
}

/// The policies (name, rules, answered 404) of one group, and whether overlapping routes are
/// judged stricter than Linkerd does; `Err` when they cannot be written within [`MAX_RULES`].
fn group_policies(parts: &Parts<'_>, at: &AtWaypoint) -> Result<(Made, bool), ()> {
    let guard = &at.guard;
    let mut stricter = false;
    if guard.dry_run {
        // Audit admits every client (ztunnel logs them): nothing to refuse.
        return Ok((Vec::new(), stricter));
    }
    let routes: Vec<_> = guard
        .server
        .as_ref()
        .and_then(|server| {
            let routes = parts.objects.routes.get(parts.namespace)?;
            Some(
                routes
                    .iter()
                    .filter(|r| r.servers.contains(server))
                    .collect(),
            )
        })
        .unwrap_or_default();
    if routes.is_empty() {
        let rules = parts.refusing(&Vec::new(), &[], &guard.alternatives, &mut stricter)?;
        return Ok((vec![(guard.name.clone(), rules, false)], stricter));
    }
    // Each request is judged by the first match it meets, in the Gateway API's precedence.
    let mut ordered: Vec<(&RouteDef, &MatchDef)> = routes
        .iter()
        .flat_map(|r| r.matches.iter().map(move |m| (*r, m)))
        .collect();
    ordered.sort_by_key(|(_, m)| routes::precedence(m));
    let mut refused = Vec::new();
    for (i, (r, m)) in ordered.iter().enumerate() {
        let mut alternatives = guard.alternatives.clone();
        if !r.admits_nobody {
            alternatives.extend(parts.route_alternatives(&r.name));
        }
        let higher: Vec<&MatchDef> = ordered[..i]
            .iter()
            .map(|(_, h)| *h)
            .filter(|h| !routes::disjoint(h, m))
            .collect();
        refused.extend(parts.refusing(m, &higher, &alternatives, &mut stricter)?);
    }
    let matches: Vec<&MatchDef> = ordered.iter().map(|(_, m)| *m).collect();
    let missing = parts.missing(&matches)?;
    let policies = vec![
        (guard.name.clone(), refused, false),
        (format!("{}{NO_ROUTE_SUFFIX}", guard.name), missing, true),
    ];
    Ok((policies, stricter))
}

/// What a waypoint enforces of Linkerd's policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AtWaypointConfig {
    /// Authorization (DENY policies).
    pub policies: Vec<AuthorizationPolicy>,
    /// Rate limits of Servers.
    pub rate_limits: Vec<WorkloadRateLimit>,
}

/// The rate limit of a group's Server, if it has one.
fn rate_limit(objects: &Objects, namespace: &str, group: &Group) -> Option<WorkloadRateLimit> {
    let server = group.at.guard.server.as_ref()?;
    let def = objects
        .rate_limits
        .get(&(namespace.to_owned(), server.clone()))?;
    let ports = match &group.at.ports {
        Ports::Only(list) => list.iter().map(|p| u32::from(*p)).collect(),
        Ports::Except(_) => Vec::new(),
    };
    Some(WorkloadRateLimit {
        name: def.name.clone(),
        namespace: namespace.to_owned(),
        workload_uids: group.uids.iter().cloned().collect(),
        ports,
        total: def.total.clone(),
        per_identity: def.identity.clone(),
        overrides: def.overrides.clone(),
    })
}

/// The waypoint policies and rate limits of every guard a waypoint enforces.
pub(super) fn policies(
    objects: &Objects,
    at_waypoints: Vec<AtWaypoint>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<WaypointKey, AtWaypointConfig> {
    let mut groups: BTreeMap<(WaypointKey, String, String), Group> = BTreeMap::new();
    for at in at_waypoints {
        let key = (at.waypoint.clone(), at.pod.0.clone(), at.guard.name.clone());
        let uid = at.uid.clone();
        match groups.get_mut(&key) {
            Some(group) => {
                // Pods may reach the same port through different service ports.
                group.at.ports = merged(&group.at.ports, &at.ports);
                group.uids.insert(uid);
            }
            None => {
                groups.insert(
                    key,
                    Group {
                        at,
                        uids: BTreeSet::from([uid]),
                    },
                );
            }
        }
    }
    let mut out: BTreeMap<WaypointKey, AtWaypointConfig> = BTreeMap::new();
    for ((waypoint, namespace, _), group) in groups {
        if let Some(limit) = rate_limit(objects, &namespace, &group) {
            out.entry(waypoint.clone())
                .or_default()
                .rate_limits
                .push(limit);
        }
        let parts = Parts {
            objects,
            namespace: &namespace,
            port: port_condition(&group.at.ports),
        };
        let made = match group_policies(&parts, &group.at) {
            Ok((made, stricter)) => {
                if stricter {
                    problems.push(overlapping(&group.at, &namespace));
                }
                made
            }
            Err(()) => {
                problems.push(too_many(&group.at, &namespace));
                // Every request to the guarded ports is refused.
                let refuse_all = vec![parts.rule(None, Vec::new())];
                vec![(group.at.guard.name.clone(), refuse_all, false)]
            }
        };
        for (name, rules, not_found) in made {
            if rules.is_empty() {
                continue;
            }
            out.entry(waypoint.clone())
                .or_default()
                .policies
                .push(AuthorizationPolicy {
                    name,
                    namespace: namespace.clone(),
                    action: AuthorizationAction::Deny as i32,
                    scope: PolicyScope::Workloads as i32,
                    services: Vec::new(),
                    workloads: Some(WorkloadSelector {
                        namespace: namespace.clone(),
                        labels: Default::default(),
                        workload_uids: group.uids.iter().cloned().collect(),
                    }),
                    rules,
                    not_found,
                });
        }
    }
    out
}

fn overlapping(at: &AtWaypoint, namespace: &str) -> Problem {
    let server = at.guard.server.as_deref().unwrap_or_default();
    Problem::new(&at.guard.origin, "Server", namespace, server).message(format!(
        "{WARNING_PREFIX}its routes overlap in more ways than {MAX_RULES} authorization rules \
         express at the waypoint {}/{}: a request matching several routes must be admitted by \
         each of them (stricter than Linkerd, which judges it by the first in precedence)",
        at.waypoint.namespace, at.waypoint.name
    ))
}

fn too_many(at: &AtWaypoint, namespace: &str) -> Problem {
    let (kind, name) = match &at.guard.server {
        Some(server) => ("Server", server.as_str()),
        None => ("Pod", at.pod.1.as_str()),
    };
    Problem::new(&at.guard.origin, kind, namespace, name).message(format!(
        "{WARNING_PREFIX}its authorizations and routes expand to more than {MAX_RULES} \
         authorization rules at the waypoint {}/{}: every request to its ports is refused \
         there (fail closed); use fewer authentications per policy or fewer route matches",
        at.waypoint.namespace, at.waypoint.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::linkerd_policy::routes::Part;

    fn principal(s: &str) -> Requirement {
        Requirement::Principal(vec![L4Match {
            match_type: Some(MatchType::Exact(s.into())),
        }])
    }

    fn network() -> Requirement {
        Requirement::Network(vec![Address {
            address: vec![10, 0, 0, 0],
            length: 8,
        }])
    }

    fn exact(s: &str) -> StringMatch {
        StringMatch {
            kind: Some(Kind::Exact(s.into())),
            ignore_case: false,
        }
    }

    #[test]
    fn failing_every_alternative_takes_one_requirement_of_each() {
        // Admitted: (a) or (b and the network); refused: not a, and (not b or outside).
        let ways = failing_all(&vec![vec![principal("a")], vec![principal("b"), network()]])
            .unwrap()
            .unwrap();
        assert_eq!(ways.len(), 2);
        assert_eq!(ways[0][0].not_values, vec![exact("a")]);
        assert_eq!(ways[0][1].not_values, vec![exact("b")]);
        assert_eq!(ways[1][1].key, ConditionKey::SourceIp as i32);
        // Everybody admitted: nothing to refuse; nobody: one way, unconditional.
        assert_eq!(failing_all(&vec![Vec::new()]).unwrap(), None);
        assert_eq!(failing_all(&Vec::new()).unwrap(), Some(vec![Vec::new()]));
        let nobody = vec![vec![Requirement::Principal(Vec::new())]];
        assert_eq!(failing_all(&nobody).unwrap(), Some(vec![Vec::new()]));
        // Too many ways is an error, for the caller to fail closed.
        let wide: Alternatives = (0..7).map(|_| vec![principal("x"), network()]).collect();
        assert!(failing_all(&wide).is_err());
    }

    #[test]
    fn a_miss_fails_one_part_of_every_match() {
        let objects = Objects::default();
        let parts = Parts {
            objects: &objects,
            namespace: "shop",
            port: port_condition(&Ports::Only(vec![80])),
        };
        let get = vec![Part::Paths(vec![exact("/a")]), Part::Method(exact("GET"))];
        let header = vec![Part::Header("x-v".into(), Some(exact("1")))];
        let rules = parts.missing(&[&get, &header]).unwrap();
        // (not /a or not GET) and header x-v not 1: two rules, each on the port.
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].to[0].not_paths, vec![exact("/a")]);
        assert_eq!(rules[1].to[0].not_methods, vec![exact("GET")]);
        for r in &rules {
            assert_eq!(r.when[0].not_values, vec![exact("1")]);
            assert_eq!(r.when[1].port_values, vec![80]);
        }
        // A match of every request leaves no miss.
        assert!(parts.missing(&[&get, &Vec::new()]).unwrap().is_empty());
    }

    #[test]
    fn ports_of_a_guard_merge_across_pods() {
        assert_eq!(
            merged(&Ports::Only(vec![80]), &Ports::Only(vec![8080, 80])),
            Ports::Only(vec![80, 8080])
        );
        assert_eq!(
            port_condition(&Ports::Except(vec![8080])).map(|c| c.not_port_values),
            Some(vec![8080])
        );
        assert_eq!(port_condition(&Ports::Except(Vec::new())), None);
    }
}
