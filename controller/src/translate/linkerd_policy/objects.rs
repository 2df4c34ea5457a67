//! Every Linkerd policy object of the index, validated; an invalid one keeps its last good
//! version, or fails closed: a Server refuses every client it does not authorize, an
//! authentication admits nobody, an AuthorizationPolicy authorizes nothing.

use std::collections::BTreeMap;

use super::decode::{self, Authentications, Decoded};
use super::defs::{DefaultPolicy, PolicyDef, Requirement, ServerDef, Target};
use super::rate_limit::{self, RateLimitDef, RateLimits};
use super::routes::{self, RouteDef, Routes};
use crate::model::linkerd::{LINKERD_AUTHORIZATION_POLICY, LINKERD_HTTP_ROUTE};
use crate::model::{Index, Object, ObjectKey, Problem};
use crate::translate::last_good::LastGood;

/// The last good version of each Linkerd object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Memory {
    servers: LastGood<ServerDef>,
    authentications: LastGood<Requirement>,
    policies: LastGood<PolicyDef>,
    routes: LastGood<RouteDef>,
    rate_limits: LastGood<(String, RateLimitDef)>,
}

/// The validated objects of one translation.
#[derive(Debug, Default)]
pub(super) struct Objects {
    /// Servers by namespace.
    pub servers: BTreeMap<String, Vec<ServerDef>>,
    /// Enforced authorization policies by namespace.
    pub policies: BTreeMap<String, Vec<PolicyDef>>,
    /// Inbound routes (HTTPRoutes whose parent is a Server) by namespace.
    pub routes: Routes,
    /// Rate limits by Server.
    pub rate_limits: RateLimits,
}

/// Raw objects of `kind`: (origin, key, value).
fn raw<'a>(
    index: &'a Index,
    kind: &'a str,
) -> impl Iterator<Item = (&'a str, ObjectKey, &'a serde_json::Value)> + 'a {
    index.of_kind(kind).filter_map(|s| match &s.object {
        Object::Raw { value, .. } => Some((s.origin.as_str(), s.object.key(), value)),
        _ => None,
    })
}

/// Validates every Linkerd object of `index`.
pub(super) fn collect(
    index: &Index,
    trust_domain: &str,
    memory: &mut Memory,
    problems: &mut Vec<Problem>,
) -> Objects {
    memory.servers.start();
    memory.authentications.start();
    memory.policies.start();
    memory.routes.start();
    memory.rate_limits.start();
    let authns = authentications(index, trust_domain, memory, problems);
    let mut out = Objects {
        routes: inbound_routes(index, memory, problems),
        rate_limits: rate_limits(index, trust_domain, memory, problems),
        ..Objects::default()
    };
    for (origin, key, value) in raw(index, LINKERD_AUTHORIZATION_POLICY) {
        let policy = match decode::policy(&key.namespace, value, trust_domain, &authns) {
            Ok(Decoded::Enforced(p, warnings)) => {
                for warning in warnings {
                    problems.push(decode::problem(origin, &key, warning));
                }
                if let Some(missing) = unattached(&out.routes, &p) {
                    problems.push(decode::problem(origin, &key, missing));
                }
                memory.policies.good(key, &p);
                Some(p)
            }
            Ok(Decoded::NotEnforced(warning)) => {
                problems.push(decode::problem(origin, &key, warning));
                None
            }
            Err(invalid) => memory.policies.invalid_or(
                key.clone(),
                decode::problem(origin, &key, invalid),
                None,
                "it authorizes no client until fixed",
                "",
                problems,
            ),
        };
        if let Some(p) = policy {
            out.policies.entry(p.namespace.clone()).or_default().push(p);
        }
    }
    for (origin, key, value) in raw(index, "Server") {
        let server = match decode::server(origin, &key.name, value) {
            Ok(s) => {
                if s.access == DefaultPolicy::Audit {
                    problems.push(decode::problem(
                        origin,
                        &key,
                        (
                            "spec.accessPolicy".to_owned(),
                            "warning: audit admits every client; ztunnel logs the connections \
                             no authorization admits (a dry-run DENY policy)"
                                .to_owned(),
                        ),
                    ));
                }
                memory.servers.good(key.clone(), &s);
                Some(s)
            }
            Err(bad) => {
                let (invalid, stand_in) = *bad;
                memory.servers.invalid_or(
                    key.clone(),
                    decode::problem(origin, &key, invalid),
                    Some(stand_in),
                    "its port refuses every client no policy authorizes until fixed (a port it \
                 cannot read: every port of its pods; a selector it cannot read: every pod of \
                 its namespace)",
                    "",
                    problems,
                )
            }
        };
        if let Some(s) = server {
            out.servers.entry(key.namespace).or_default().push(s);
        }
    }
    out
}

/// Every MeshTLSAuthentication and NetworkAuthentication; an invalid one without a last good
/// version admits nobody.
fn authentications(
    index: &Index,
    trust_domain: &str,
    memory: &mut Memory,
    problems: &mut Vec<Problem>,
) -> Authentications {
    let mut out = Authentications::new();
    for kind in ["MeshTLSAuthentication", "NetworkAuthentication"] {
        for (origin, key, value) in raw(index, kind) {
            let decoded = if kind == "NetworkAuthentication" {
                decode::network(value).map(|r| (r, Vec::new()))
            } else {
                decode::mesh_tls(&key.namespace, value, trust_domain)
            };
            let requirement = match decoded {
                Ok((r, warnings)) => {
                    problems.extend(
                        warnings
                            .into_iter()
                            .map(|w| decode::problem(origin, &key, w)),
                    );
                    memory.authentications.good(key.clone(), &r);
                    r
                }
                Err(invalid) => {
                    let nobody = match kind {
                        "NetworkAuthentication" => Requirement::Network(Vec::new()),
                        _ => Requirement::Principal(Vec::new()),
                    };
                    memory
                        .authentications
                        .invalid_or(
                            key.clone(),
                            decode::problem(origin, &key, invalid),
                            Some(nobody.clone()),
                            "it admits no client until fixed",
                            "",
                            problems,
                        )
                        .unwrap_or(nobody)
                }
            };
            out.insert(key, requirement);
        }
    }
    out
}

/// The Servers an unreadable route names as parents, as far as they can be read.
fn salvaged_servers(value: &serde_json::Value) -> Vec<String> {
    let parents = value
        .get("spec")
        .and_then(|s| s.get("parentRefs"))
        .and_then(|p| p.as_array());
    parents
        .into_iter()
        .flatten()
        .filter(|p| p.get("kind").and_then(|k| k.as_str()) == Some("Server"))
        .filter_map(|p| p.get("name")?.as_str().map(str::to_owned))
        .collect()
}

/// Every HTTPRoute whose parent is a Server; an invalid one without a last good version
/// matches every request to its Servers and admits nobody. A GRPCRoute whose parent is a
/// Server is a warning: it is not an inbound route here.
fn inbound_routes(index: &Index, memory: &mut Memory, problems: &mut Vec<Problem>) -> Routes {
    for (origin, key, value) in raw(index, "GRPCRoute") {
        if !salvaged_servers(value).is_empty() {
            problems.push(decode::problem(
                origin,
                &key,
                (
                    "spec.parentRefs".to_owned(),
                    "warning: a GRPCRoute whose parent is a Server is not enforced: the \
                     Server's requests are judged by its own policies, without routes"
                        .to_owned(),
                ),
            ));
        }
    }
    let mut out = Routes::new();
    let routes = raw(index, "HTTPRoute").chain(raw(index, LINKERD_HTTP_ROUTE));
    for (origin, key, value) in routes {
        let route = match routes::route(&key.namespace, &key.name, value) {
            Ok(None) => continue,
            Ok(Some((r, warnings))) => {
                for warning in warnings {
                    problems.push(decode::problem(origin, &key, warning));
                }
                memory.routes.good(key.clone(), &r);
                Some(r)
            }
            Err(invalid) => {
                let servers = salvaged_servers(value);
                if servers.is_empty() {
                    // Not an inbound route as far as it can be read: the route translation
                    // reports it.
                    continue;
                }
                let stand_in = RouteDef {
                    name: key.name.clone(),
                    servers,
                    matches: vec![routes::every_request()],
                    admits_nobody: true,
                };
                memory.routes.invalid_or(
                    key.clone(),
                    decode::problem(origin, &key, invalid),
                    Some(stand_in),
                    "the requests to its Servers are refused at the waypoint until fixed",
                    "",
                    problems,
                )
            }
        };
        if let Some(r) = route {
            out.entry(key.namespace).or_default().push(r);
        }
    }
    out
}

/// A warning for a policy targeting a route that is not an inbound route of its namespace.
fn unattached(routes: &Routes, p: &PolicyDef) -> Option<decode::Invalid> {
    let Target::Route(name) = &p.target else {
        return None;
    };
    let known = routes
        .get(&p.namespace)
        .is_some_and(|rs| rs.iter().any(|r| &r.name == name));
    (!known).then(|| {
        (
            "spec.targetRef.name".to_owned(),
            format!(
                "warning: no HTTPRoute {name:?} whose parent is a Server in this namespace: the \
                 policy admits no client"
            ),
        )
    })
}

/// Every HTTPLocalRateLimitPolicy, by Server: one per Server (the first by name). An invalid one
/// keeps its last good version; a fresh invalid one limits nothing (authorization still
/// applies) and is reported.
fn rate_limits(
    index: &Index,
    trust_domain: &str,
    memory: &mut Memory,
    problems: &mut Vec<Problem>,
) -> RateLimits {
    let mut out = RateLimits::new();
    for (origin, key, value) in raw(index, rate_limit::KIND) {
        let decoded = match rate_limit::policy(&key, origin, value, trust_domain) {
            Ok(d) => {
                memory.rate_limits.good(key.clone(), &d);
                Some(d)
            }
            Err(invalid) => memory.rate_limits.invalid_or(
                key.clone(),
                decode::problem(origin, &key, invalid),
                None,
                "it limits nothing until fixed",
                "",
                problems,
            ),
        };
        let Some((server, def)) = decoded else {
            continue;
        };
        match out.get(&(key.namespace.clone(), server.clone())) {
            Some(kept) => problems.push(rate_limit::second(origin, &key, &kept.name, &server)),
            None => {
                out.insert((key.namespace.clone(), server), def);
            }
        }
    }
    out
}
