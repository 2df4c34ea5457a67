//! Istio AuthorizationPolicy → `istio.security.Authorization`, with Istio's
//! ambient semantics: rules are enforced by ztunnel at L4, so HTTP attributes
//! cannot match there. In an ALLOW policy a rule with HTTP attributes is
//! dropped (it could never match: fail closed); in a DENY policy only the HTTP
//! parts are dropped (the rule denies more: fail closed). The warning saying so
//! is kept with the policy and reported unless waypoints enforce the policy
//! for every workload it selects (see `waypoint_policy`). Policies with
//! `targetRefs` belong to waypoints only. A policy that cannot be understood
//! fails closed (see `fail_closed`); CUSTOM (external authorization, not
//! supported) is enforced as DENY of the requests it would have sent to its
//! provider.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::security::{
    Action, Address, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

use super::fail_closed::StandIn;
use super::labels::selects;
use super::last_good::LastGood;
use super::options::TranslateOptions;
use crate::model::{
    AuthorizationPolicy, AuthorizationRule, Condition, Index, ObjectKey, Pod, Problem,
};

/// `when` keys ztunnel can evaluate.
const L4_WHEN_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// A translated policy and the workloads it selects.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Policy {
    /// The resource sent to ztunnel.
    pub auth: Authorization,
    /// For WORKLOAD_SELECTOR policies: the labels a pod must carry. Pods of
    /// the policy's namespace only, or of every namespace for the root one.
    pub selector: Option<BTreeMap<String, String>>,
    /// True for policies of the root namespace.
    pub mesh_wide: bool,
    /// The warning that HTTP attributes were dropped, if any; reported
    /// unless a waypoint enforces the policy for every workload it selects.
    pub l7_warning: Option<Problem>,
    /// A warning always reported (a CUSTOM action enforced as DENY).
    pub warning: Option<Problem>,
    /// For policies that pick their pods one by one (Linkerd's, see `linkerd_policy`): the
    /// (namespace, name) of each pod it applies to.
    pub pods: Option<BTreeSet<(String, String)>>,
}

impl Policy {
    /// `<namespace>/<name>`, as workloads reference the policy.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.auth.namespace, self.auth.name)
    }

    /// True when the policy applies to `pod`: a pod of the policy's
    /// namespace (of any namespace for the root one) that its selector, if
    /// it has one, picks.
    pub fn applies_to(&self, pod: &Pod) -> bool {
        let m = &pod.metadata;
        if let Some(pods) = &self.pods {
            return pods.contains(&(m.namespace.clone(), m.name.clone()));
        }
        (self.mesh_wide || self.auth.namespace == m.namespace)
            && self.selector.as_ref().is_none_or(|s| selects(s, &m.labels))
    }
}

/// Why a policy produced no resource.
enum Skip {
    /// Invalid: the last good translation stays in force.
    Invalid(Box<Problem>),
    /// Valid, but nothing for ztunnel (unsupported action): removed.
    Unsupported(Box<Problem>),
    /// Meant for a waypoint (`targetRefs`): nothing for ztunnel.
    ForWaypoint,
}

/// Translates every AuthorizationPolicy; invalid ones fall back to their
/// last good translation.
pub(crate) fn convert_all(
    index: &Index,
    options: &TranslateOptions,
    memory: &mut LastGood<Policy>,
    problems: &mut Vec<Problem>,
) -> Vec<Policy> {
    memory.start();
    let mut out = Vec::new();
    for (origin, ap) in index.authorization_policies() {
        let m = &ap.metadata;
        let key = ObjectKey::new("AuthorizationPolicy", &m.namespace, &m.name);
        match convert(origin, ap, options) {
            Ok(policy) => {
                memory.good(key, &policy);
                out.push(policy);
            }
            Err(Skip::Invalid(problem)) => {
                let stand_in = StandIn::of(ap);
                let policy = stand_in_policy(ap, options, stand_in);
                let consequence = stand_in.consequence();
                out.extend(memory.invalid_or(key, *problem, policy, consequence, "", problems));
            }
            Err(Skip::Unsupported(problem)) => problems.push(*problem),
            Err(Skip::ForWaypoint) => {}
        }
    }
    out
}

fn convert(
    origin: &str,
    ap: &AuthorizationPolicy,
    options: &TranslateOptions,
) -> Result<Policy, Skip> {
    let m = &ap.metadata;
    let problem = || Problem::new(origin, "AuthorizationPolicy", &m.namespace, &m.name);
    if !ap.spec.target_refs.is_empty() || ap.spec.target_ref.is_some() {
        // Enforced by the targeted waypoint, not by ztunnel.
        return Err(Skip::ForWaypoint);
    }
    if let Some(unreadable) = &ap.unreadable {
        return Err(Skip::Invalid(unreadable.clone()));
    }
    let mut warning = None;
    let action = match ap.spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => Action::Allow,
        "DENY" => Action::Deny,
        "CUSTOM" => {
            warning = Some(problem().field("spec.action").message(CUSTOM_AS_DENY));
            Action::Deny
        }
        "AUDIT" => {
            return Err(Skip::Unsupported(Box::new(
                problem()
                    .field("spec.action")
                    .message("ztunnel does not support the AUDIT action; policy skipped"),
            )));
        }
        other => {
            return Err(Skip::Invalid(Box::new(
                problem().field("spec.action").message(format!(
                    "unknown action {other:?} (ALLOW, DENY, AUDIT, CUSTOM)"
                )),
            )));
        }
    };
    let (selector, mesh_wide, scope) = placement(ap, options);
    let (rules, l7_found) = convert_rules(ap, action == Action::Allow, |rule, field| {
        let (clauses, l7) = convert_rule(rule, &m.namespace, field)?;
        Ok((Rule { clauses }, l7))
    })
    .map_err(|(f, msg)| Skip::Invalid(Box::new(problem().field(f).message(msg))))?;
    let l7_warning = (!l7_found.is_empty()).then(|| {
        let consequence = if action == Action::Allow {
            "within an ALLOW policy, rules matching HTTP attributes are omitted"
        } else {
            "the DENY policy is enforced without its HTTP parts"
        };
        problem().field("spec.rules").message(format!(
            "warning: ztunnel does not support HTTP attributes (found: {}); use a waypoint to enforce them; {consequence}, which is more restrictive than requested",
            l7_found.join(", ")
        ))
    });
    Ok(Policy {
        auth: Authorization {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            scope: scope as i32,
            action: action as i32,
            rules,
            dry_run: false,
        },
        selector,
        mesh_wide,
        l7_warning,
        warning,
        pods: None,
    })
}

/// What a CUSTOM policy means here.
pub(super) const CUSTOM_AS_DENY: &str = "warning: the CUSTOM action (external authorization) \
    is not supported; it is enforced as DENY of the requests it would have sent to its provider";

/// Where a policy applies: its selector (absent or empty: every workload of its namespace,
/// or of the mesh for the root namespace), whether it is mesh-wide, and the scope saying so.
fn placement(
    ap: &AuthorizationPolicy,
    options: &TranslateOptions,
) -> (Option<BTreeMap<String, String>>, bool, Scope) {
    let selector = ap
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .filter(|labels| !labels.is_empty());
    let mesh_wide = ap.metadata.namespace == options.root_namespace;
    let scope = match (&selector, mesh_wide) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };
    (selector, mesh_wide, scope)
}

/// The policy standing in for `ap`, which cannot be understood (see `fail_closed`).
fn stand_in_policy(
    ap: &AuthorizationPolicy,
    options: &TranslateOptions,
    stand_in: StandIn,
) -> Option<Policy> {
    let (action, rules) = match stand_in {
        StandIn::AllowNothing => (Action::Allow, Vec::new()),
        // A rule without clauses matches every connection.
        StandIn::DenyAll => (Action::Deny, vec![Rule::default()]),
        StandIn::Nothing => return None,
    };
    let (selector, mesh_wide, scope) = placement(ap, options);
    Some(Policy {
        auth: Authorization {
            name: ap.metadata.name.clone(),
            namespace: ap.metadata.namespace.clone(),
            scope: scope as i32,
            action: action as i32,
            rules,
            dry_run: false,
        },
        selector,
        mesh_wide,
        l7_warning: None,
        warning: None,
        pods: None,
    })
}

/// (field, message) of an invalid value.
pub(super) type RuleError = (String, String);

/// Converts every rule of `ap` with `convert`, which also returns the
/// attributes it had to leave out. In an ALLOW policy a rule missing
/// attributes is dropped (it could never match); in a DENY policy it stays
/// without them (it denies more): both fail closed. Returns the rules and
/// every attribute left out, once, in order of appearance.
pub(super) fn convert_rules<R>(
    ap: &AuthorizationPolicy,
    allow: bool,
    mut convert: impl FnMut(&AuthorizationRule, &str) -> Result<(R, Vec<String>), RuleError>,
) -> Result<(Vec<R>, Vec<String>), RuleError> {
    let mut rules = Vec::new();
    let mut left_out: Vec<String> = Vec::new();
    for (i, rule) in ap.spec.rules.iter().enumerate() {
        let (converted, missing) = convert(rule, &format!("spec.rules[{i}]"))?;
        let dropped = allow && !missing.is_empty();
        for attr in missing {
            if !left_out.contains(&attr) {
                left_out.push(attr);
            }
        }
        if !dropped {
            rules.push(converted);
        }
    }
    Ok((rules, left_out))
}

/// One Istio rule → clauses (all must match); also returns the HTTP
/// attributes found. Clause order follows Istio: to, from, then when.
fn convert_rule(
    rule: &AuthorizationRule,
    namespace: &str,
    field: &str,
) -> Result<(Vec<Clause>, Vec<String>), RuleError> {
    let mut l7 = Vec::new();
    let mut clauses = Vec::new();
    let mut to_matches = Vec::new();
    for (j, to) in rule.to.iter().enumerate() {
        let op = &to.operation;
        let f = format!("{field}.to[{j}].operation");
        for (name, values) in [
            ("hosts", &op.hosts),
            ("notHosts", &op.not_hosts),
            ("methods", &op.methods),
            ("notMethods", &op.not_methods),
            ("paths", &op.paths),
            ("notPaths", &op.not_paths),
        ] {
            if !values.is_empty() {
                l7.push(name.to_string());
            }
        }
        to_matches.push(Match {
            destination_ports: ports(&op.ports, &format!("{f}.ports"))?,
            not_destination_ports: ports(&op.not_ports, &format!("{f}.notPorts"))?,
            ..Default::default()
        });
    }
    if !to_matches.is_empty() {
        clauses.push(Clause {
            matches: to_matches,
        });
    }
    let mut from_matches = Vec::new();
    for (j, from) in rule.from.iter().enumerate() {
        let s = &from.source;
        let f = format!("{field}.from[{j}].source");
        for (name, values) in [
            ("requestPrincipals", &s.request_principals),
            ("notRequestPrincipals", &s.not_request_principals),
            ("remoteIpBlocks", &s.remote_ip_blocks),
            ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ] {
            if !values.is_empty() {
                l7.push(name.to_string());
            }
        }
        from_matches.push(Match {
            principals: strings(&s.principals, &format!("{f}.principals"))?,
            not_principals: strings(&s.not_principals, &format!("{f}.notPrincipals"))?,
            namespaces: strings(&s.namespaces, &format!("{f}.namespaces"))?,
            not_namespaces: strings(&s.not_namespaces, &format!("{f}.notNamespaces"))?,
            service_accounts: service_accounts(&s.service_accounts, namespace),
            not_service_accounts: service_accounts(&s.not_service_accounts, namespace),
            source_ips: ips(&s.ip_blocks, &format!("{f}.ipBlocks"))?,
            not_source_ips: ips(&s.not_ip_blocks, &format!("{f}.notIpBlocks"))?,
            ..Default::default()
        });
    }
    if !from_matches.is_empty() {
        clauses.push(Clause {
            matches: from_matches,
        });
    }
    for (j, when) in rule.when.iter().enumerate() {
        if !L4_WHEN_KEYS.contains(&when.key.as_str()) {
            l7.push(when.key.clone());
            continue;
        }
        let m = when_match(when, &format!("{field}.when[{j}]"))?;
        clauses.push(Clause { matches: vec![m] });
    }
    Ok((clauses, l7))
}

/// A `when` condition (at `f`) on one of [`L4_WHEN_KEYS`], as ztunnel matches it.
fn when_match(when: &Condition, f: &str) -> Result<Match, RuleError> {
    let (vals, nots) = (&when.values, &when.not_values);
    let vf = format!("{f}.values");
    let nf = format!("{f}.notValues");
    let mut m = Match::default();
    match when.key.as_str() {
        "source.ip" => {
            m.source_ips = ips(vals, &vf)?;
            m.not_source_ips = ips(nots, &nf)?;
        }
        "source.namespace" => {
            m.namespaces = strings(vals, &vf)?;
            m.not_namespaces = strings(nots, &nf)?;
        }
        "source.principal" => {
            m.principals = strings(vals, &vf)?;
            m.not_principals = strings(nots, &nf)?;
        }
        "destination.ip" => {
            m.destination_ips = ips(vals, &vf)?;
            m.not_destination_ips = ips(nots, &nf)?;
        }
        _ => {
            m.destination_ports = ports(vals, &vf)?;
            m.not_destination_ports = ports(nots, &nf)?;
        }
    }
    Ok(m)
}

/// Istio's string patterns: `*` alone means "present", a leading `*` a
/// suffix match, a trailing `*` a prefix match; `*` anywhere else is invalid.
pub(super) fn strings(values: &[String], field: &str) -> Result<Vec<StringMatch>, RuleError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = |why: &str| Err((format!("{field}[{i}]"), format!("{v:?} {why}")));
            let match_type = if v == "*" {
                MatchType::Presence(())
            } else if v.is_empty() {
                return bad("is empty");
            } else if let Some(rest) = v.strip_prefix('*') {
                if rest.contains('*') {
                    return bad("may contain `*` only at its start or end");
                }
                MatchType::Suffix(rest.to_string())
            } else if let Some(rest) = v.strip_suffix('*') {
                if rest.contains('*') {
                    return bad("may contain `*` only at its start or end");
                }
                MatchType::Prefix(rest.to_string())
            } else if v.contains('*') {
                return bad("may contain `*` only at its start or end");
            } else {
                MatchType::Exact(v.clone())
            };
            Ok(StringMatch {
                match_type: Some(match_type),
            })
        })
        .collect()
}

/// `sa` (in the policy's namespace) or `ns/sa`.
fn service_accounts(values: &[String], namespace: &str) -> Vec<ServiceAccountMatch> {
    values
        .iter()
        .map(|v| match v.split_once('/') {
            Some((ns, sa)) => ServiceAccountMatch {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            },
            None => ServiceAccountMatch {
                namespace: namespace.to_string(),
                service_account: v.clone(),
            },
        })
        .collect()
}

pub(super) fn ports(values: &[String], field: &str) -> Result<Vec<u32>, RuleError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(u32::from(p)),
            _ => Err((
                format!("{field}[{i}]"),
                format!("{v:?} is not a port number"),
            )),
        })
        .collect()
}

/// IPs and CIDRs (`10.0.0.0/8`, `fd00::/64`, `10.1.2.3`).
pub(super) fn ips(values: &[String], field: &str) -> Result<Vec<Address>, RuleError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = || {
                (
                    format!("{field}[{i}]"),
                    format!("{v:?} is not an IP address or CIDR"),
                )
            };
            let (ip, len) = match v.split_once('/') {
                Some((ip, len)) => {
                    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                    let len: u32 = len.parse().map_err(|_| bad())?;
                    (ip, len)
                }
                None => {
                    let ip: IpAddr = v.parse().map_err(|_| bad())?;
                    (ip, if ip.is_ipv4() { 32 } else { 128 })
                }
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if len > max {
                return Err(bad());
            }
            Ok(Address {
                address: super::services::ip_bytes(ip),
                length: len,
            })
        })
        .collect()
}
