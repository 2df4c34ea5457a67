//! Every Linkerd policy object of the index, validated; an invalid one keeps its last good
//! version, or fails closed: a Server refuses every client it does not authorize, an
//! authentication admits nobody, an AuthorizationPolicy authorizes nothing.

use std::collections::BTreeMap;

use super::decode::{self, Authentications, Decoded};
use super::defs::{DefaultPolicy, PolicyDef, Requirement, ServerDef};
use crate::model::linkerd::LINKERD_AUTHORIZATION_POLICY;
use crate::model::{Index, Object, ObjectKey, Problem};
use crate::translate::last_good::LastGood;

/// The last good version of each Linkerd object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Memory {
    servers: LastGood<ServerDef>,
    authentications: LastGood<Requirement>,
    policies: LastGood<PolicyDef>,
}

/// The validated objects of one translation.
#[derive(Debug, Default)]
pub(super) struct Objects {
    /// Servers by namespace.
    pub servers: BTreeMap<String, Vec<ServerDef>>,
    /// Enforced authorization policies by namespace.
    pub policies: BTreeMap<String, Vec<PolicyDef>>,
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
    let authns = authentications(index, trust_domain, memory, problems);
    let mut out = Objects::default();
    for (origin, key, value) in raw(index, LINKERD_AUTHORIZATION_POLICY) {
        let policy = match decode::policy(&key.namespace, value, trust_domain, &authns) {
            Ok(Decoded::Enforced(p, warnings)) => {
                for warning in warnings {
                    problems.push(decode::problem(origin, &key, warning));
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
