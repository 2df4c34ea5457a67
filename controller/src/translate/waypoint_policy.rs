//! AuthorizationPolicy at waypoints, with Istio's ambient semantics: a
//! waypoint enforces the L4 and L7 parts of a policy with the original
//! caller's identity.
//!
//! A policy applies at a waypoint when its `targetRefs` name the waypoint's
//! Gateway (every request through it), a Service the waypoint serves
//! (requests to that service), or the `istio-waypoint` GatewayClass from the
//! root namespace (every waypoint); and, as a selector (or namespace-wide)
//! policy, when workloads it selects are reached through a waypoint (requests
//! whose endpoint is one of those workloads).
//!
//! JWT attributes are not supported: an ALLOW rule using them never matches
//! and a DENY rule is enforced without them (fail closed), with a problem
//! reported. A policy that cannot be understood fails closed (see
//! `fail_closed`); CUSTOM is enforced as DENY.

use std::collections::{BTreeMap, BTreeSet};

use api::waypoint::{
    AuthorizationAction, AuthorizationPolicy as WaypointPolicy, AuthorizationRule, Condition,
    ConditionKey, IpBlock, Operation, PolicyScope, Source, StringMatch, WorkloadSelector,
    string_match,
};

use super::authorization::{self, RuleError};
use super::bindings::{Bindings, WaypointKey, workload_uid};
use super::fail_closed::StandIn;
use super::labels::selects;
use super::last_good::LastGood;
use super::options::TranslateOptions;
use super::service_key::ServiceKey;
use super::waypoints::{WAYPOINT_CLASS, Waypoints};
use crate::model::{AuthorizationPolicy, AuthorizationRule as Rule, Index, ObjectKey, Problem};

/// The validated, target-independent part of a policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Converted {
    action: AuthorizationAction,
    rules: Vec<AuthorizationRule>,
}

/// Last good conversion of every policy.
pub(crate) type PolicyMemory = LastGood<Converted>;

/// Where one policy applies, per waypoint.
enum Scope {
    Waypoint,
    Services(BTreeSet<String>),
    Workloads(BTreeSet<String>),
}

/// Every waypoint's policies.
pub(crate) fn collect(
    index: &Index,
    options: &TranslateOptions,
    waypoints: &Waypoints,
    bindings: &Bindings,
    memory: &mut PolicyMemory,
    problems: &mut Vec<Problem>,
) -> BTreeMap<WaypointKey, Vec<WaypointPolicy>> {
    memory.start();
    let mut out: BTreeMap<WaypointKey, Vec<WaypointPolicy>> = BTreeMap::new();
    for (origin, ap) in index.authorization_policies() {
        let m = &ap.metadata;
        let problem = |field: String, message: String| {
            Problem::new(origin, "AuthorizationPolicy", &m.namespace, &m.name)
                .field(field)
                .message(message)
        };
        let targeted = !ap.spec.target_refs.is_empty() || ap.spec.target_ref.is_some();
        let mut warnings = Vec::new();
        let scopes = if targeted {
            targets(ap, options, waypoints, bindings, &problem, &mut warnings)
        } else {
            selected(index, ap, options, bindings)
        };
        if scopes.is_empty() && !targeted {
            // Enforced by ztunnel only; its translation reports problems.
            continue;
        }
        let key = ObjectKey::new("AuthorizationPolicy", &m.namespace, &m.name);
        let converted = match convert(ap, options, &problem, &mut warnings) {
            Ok(c) => {
                problems.extend(warnings);
                memory.good(key, &c);
                c
            }
            Err(p) => {
                // Selector policies were checked by the ztunnel translation,
                // which reports their L4 errors; say what it means here.
                let at = if targeted { "" } else { " at waypoints" };
                let stand_in = StandIn::of(ap);
                let consequence = stand_in.consequence();
                let policy = stand_in_policy(stand_in);
                match memory.invalid_or(key, *p, policy, consequence, at, problems) {
                    Some(kept) => kept,
                    None => continue,
                }
            }
        };
        for (waypoint, scope) in scopes {
            let mut policy = WaypointPolicy {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                action: converted.action as i32,
                rules: converted.rules.clone(),
                ..Default::default()
            };
            match scope {
                Scope::Waypoint => policy.scope = PolicyScope::Waypoint as i32,
                Scope::Services(hosts) => {
                    policy.scope = PolicyScope::Services as i32;
                    policy.services = hosts.into_iter().collect();
                }
                Scope::Workloads(uids) => {
                    policy.scope = PolicyScope::Workloads as i32;
                    let mesh_wide = m.namespace == options.root_namespace;
                    policy.workloads = Some(WorkloadSelector {
                        namespace: if mesh_wide {
                            String::new()
                        } else {
                            m.namespace.clone()
                        },
                        labels: ap
                            .spec
                            .selector
                            .as_ref()
                            .map(|s| s.match_labels.clone().into_iter().collect())
                            .unwrap_or_default(),
                        workload_uids: uids.into_iter().collect(),
                    });
                }
            }
            out.entry(waypoint).or_default().push(policy);
        }
    }
    out
}

/// The waypoints (and scope there) that `targetRefs` name.
fn targets(
    ap: &AuthorizationPolicy,
    options: &TranslateOptions,
    waypoints: &Waypoints,
    bindings: &Bindings,
    problem: &dyn Fn(String, String) -> Problem,
    warnings: &mut Vec<Problem>,
) -> BTreeMap<WaypointKey, Scope> {
    let m = &ap.metadata;
    let mut out: BTreeMap<WaypointKey, Scope> = BTreeMap::new();
    let refs: Vec<(String, &crate::model::PolicyTargetReference)> = match &ap.spec.target_ref {
        Some(r) if ap.spec.target_refs.is_empty() => vec![("spec.targetRef".to_string(), r)],
        _ => ap
            .spec
            .target_refs
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r))
            .collect(),
    };
    for (field, r) in refs {
        let ns = if r.namespace.is_empty() {
            m.namespace.as_str()
        } else {
            r.namespace.as_str()
        };
        if ns != m.namespace {
            warnings.push(problem(
                format!("{field}.namespace"),
                "warning: a policy may only target objects of its own namespace; reference ignored"
                    .into(),
            ));
            continue;
        }
        match (r.group.as_str(), r.kind.as_str()) {
            ("gateway.networking.k8s.io", "Gateway") => match waypoints.get(ns, &r.name) {
                Some(w) => {
                    out.insert(WaypointKey::of(w), Scope::Waypoint);
                }
                None => {
                    let message = format!(
                        "warning: no waypoint Gateway {ns}/{} (class {WAYPOINT_CLASS}); \
                         reference ignored",
                        r.name
                    );
                    warnings.push(problem(format!("{field}.name"), message));
                }
            },
            ("gateway.networking.k8s.io", "GatewayClass") => {
                if r.name == WAYPOINT_CLASS && m.namespace == options.root_namespace {
                    for w in waypoints.iter() {
                        out.insert(WaypointKey::of(w), Scope::Waypoint);
                    }
                } else {
                    let message = format!(
                        "warning: only the {WAYPOINT_CLASS} GatewayClass, from the root \
                         namespace {}, can be targeted; reference ignored",
                        options.root_namespace
                    );
                    warnings.push(problem(field, message));
                }
            }
            ("" | "core", "Service") => {
                let key = ServiceKey::new(ns, &r.name);
                match bindings.services.get(&key) {
                    Some(w) => {
                        let scope = out
                            .entry(w.clone())
                            .or_insert_with(|| Scope::Services(BTreeSet::new()));
                        // A waypoint-wide scope already covers the service.
                        if let Scope::Services(hosts) = scope {
                            hosts.insert(key.hostname());
                        }
                    }
                    None => {
                        let message = format!(
                            "warning: Service {key} is not served by a waypoint; reference ignored"
                        );
                        warnings.push(problem(format!("{field}.name"), message));
                    }
                }
            }
            (g, k) => {
                let message = format!(
                    "warning: targets of kind {k:?} (group {g:?}) are not supported \
                     (Gateway, Service, GatewayClass); reference ignored"
                );
                warnings.push(problem(field, message));
            }
        }
    }
    out
}

/// For a selector or namespace-wide policy: the workloads it selects that
/// are reached through a waypoint, by waypoint.
fn selected(
    index: &Index,
    ap: &AuthorizationPolicy,
    options: &TranslateOptions,
    bindings: &Bindings,
) -> BTreeMap<WaypointKey, Scope> {
    let m = &ap.metadata;
    let mesh_wide = m.namespace == options.root_namespace;
    let selector = ap.spec.selector.as_ref().map(|s| &s.match_labels);
    let mut out: BTreeMap<WaypointKey, Scope> = BTreeMap::new();
    for (_, pod) in index.pods() {
        let in_scope = mesh_wide || pod.metadata.namespace == m.namespace;
        if !in_scope || !selector.is_none_or(|s| selects(s, &pod.metadata.labels)) {
            continue;
        }
        let uid = workload_uid(&options.cluster_id, pod);
        for w in bindings.workloads.get(&uid).into_iter().flatten() {
            if let Scope::Workloads(uids) = out
                .entry(w.clone())
                .or_insert_with(|| Scope::Workloads(BTreeSet::new()))
            {
                uids.insert(uid.clone());
            }
        }
    }
    out
}

/// True when the policy selects workloads and every one of them is reached
/// through a waypoint (which then enforces the HTTP parts).
pub(crate) fn fully_enforced_at_waypoints(
    index: &Index,
    policy: &super::authorization::Policy,
    cluster_id: &str,
    bindings: &Bindings,
) -> bool {
    let mut any = false;
    for (_, pod) in index.pods() {
        if policy.applies_to(pod) {
            if !bindings
                .workloads
                .contains_key(&workload_uid(cluster_id, pod))
            {
                return false;
            }
            any = true;
        }
    }
    any
}

/// The action and rules, validated.
fn convert(
    ap: &AuthorizationPolicy,
    options: &TranslateOptions,
    problem: &dyn Fn(String, String) -> Problem,
    warnings: &mut Vec<Problem>,
) -> Result<Converted, Box<Problem>> {
    if let Some(unreadable) = &ap.unreadable {
        return Err(unreadable.clone());
    }
    let action = match ap.spec.action.as_deref().unwrap_or("ALLOW") {
        "ALLOW" => AuthorizationAction::Allow,
        "DENY" => AuthorizationAction::Deny,
        "CUSTOM" => {
            warnings.push(problem(
                "spec.action".into(),
                authorization::CUSTOM_AS_DENY.into(),
            ));
            AuthorizationAction::Deny
        }
        "AUDIT" => {
            return Err(Box::new(problem(
                "spec.action".into(),
                "waypoints do not support the AUDIT action".into(),
            )));
        }
        other => {
            return Err(Box::new(problem(
                "spec.action".into(),
                format!("unknown action {other:?} (ALLOW, DENY, AUDIT, CUSTOM)"),
            )));
        }
    };
    let allow = action == AuthorizationAction::Allow;
    let (rules, jwt) = authorization::convert_rules(ap, allow, |rule, field| {
        convert_rule(rule, &ap.metadata.namespace, options, field)
    })
    .map_err(|(f, msg)| Box::new(problem(f, msg)))?;
    if !jwt.is_empty() {
        let consequence = if action == AuthorizationAction::Allow {
            "ALLOW rules using them never match"
        } else {
            "the DENY rules are enforced without them"
        };
        warnings.push(problem(
            "spec.rules".into(),
            format!(
                "JWT attributes are not supported (found: {}); {consequence}, which is more restrictive than requested",
                jwt.join(", ")
            ),
        ));
    }
    Ok(Converted { action, rules })
}

/// The policy standing in for one that cannot be understood (see `fail_closed`).
fn stand_in_policy(stand_in: StandIn) -> Option<Converted> {
    match stand_in {
        StandIn::AllowNothing => Some(Converted {
            action: AuthorizationAction::Allow,
            rules: Vec::new(),
        }),
        // A rule without parts matches every request.
        StandIn::DenyAll => Some(Converted {
            action: AuthorizationAction::Deny,
            rules: vec![AuthorizationRule::default()],
        }),
        StandIn::Nothing => None,
    }
}

/// How the values of a `when` condition read.
enum Values {
    Ips,
    Strings,
    Ports,
}

/// One rule; also returns the JWT attributes it uses (left out).
fn convert_rule(
    rule: &Rule,
    namespace: &str,
    options: &TranslateOptions,
    field: &str,
) -> Result<(AuthorizationRule, Vec<String>), RuleError> {
    let mut jwt = Vec::new();
    let mut out = AuthorizationRule::default();
    for (j, from) in rule.from.iter().enumerate() {
        let s = &from.source;
        for (name, values) in [
            ("requestPrincipals", &s.request_principals),
            ("notRequestPrincipals", &s.not_request_principals),
        ] {
            if !values.is_empty() {
                jwt.push(name.to_string());
            }
        }
        let f = format!("{field}.from[{j}].source");
        out.from.push(source(s, namespace, options, &f)?);
    }
    for (j, to) in rule.to.iter().enumerate() {
        let f = format!("{field}.to[{j}].operation");
        out.to.push(operation(&to.operation, &f)?);
    }
    for (j, when) in rule.when.iter().enumerate() {
        if when.key.starts_with("request.auth.") {
            jwt.push(when.key.clone());
            continue;
        }
        out.when
            .push(condition(when, &format!("{field}.when[{j}]"))?);
    }
    Ok((out, jwt))
}

/// `from[].source` (at `f`); service accounts become principals of the trust domain.
fn source(
    s: &crate::model::Source,
    namespace: &str,
    options: &TranslateOptions,
    f: &str,
) -> Result<Source, RuleError> {
    let mut principals = strings(&s.principals, &format!("{f}.principals"))?;
    principals.extend(accounts(&s.service_accounts, namespace, options));
    let mut not_principals = strings(&s.not_principals, &format!("{f}.notPrincipals"))?;
    not_principals.extend(accounts(&s.not_service_accounts, namespace, options));
    Ok(Source {
        principals,
        not_principals,
        namespaces: strings(&s.namespaces, &format!("{f}.namespaces"))?,
        not_namespaces: strings(&s.not_namespaces, &format!("{f}.notNamespaces"))?,
        ip_blocks: ips(&s.ip_blocks, &format!("{f}.ipBlocks"))?,
        not_ip_blocks: ips(&s.not_ip_blocks, &format!("{f}.notIpBlocks"))?,
        remote_ip_blocks: ips(&s.remote_ip_blocks, &format!("{f}.remoteIpBlocks"))?,
        not_remote_ip_blocks: ips(&s.not_remote_ip_blocks, &format!("{f}.notRemoteIpBlocks"))?,
    })
}

/// `to[].operation` (at `f`); hosts match without regard to case.
fn operation(o: &crate::model::Operation, f: &str) -> Result<Operation, RuleError> {
    let hosts = |v: &[String], name: &str| -> Result<Vec<StringMatch>, RuleError> {
        Ok(strings(v, &format!("{f}.{name}"))?
            .into_iter()
            .map(|mut m| {
                m.ignore_case = true;
                m
            })
            .collect())
    };
    Ok(Operation {
        hosts: hosts(&o.hosts, "hosts")?,
        not_hosts: hosts(&o.not_hosts, "notHosts")?,
        ports: authorization::ports(&o.ports, &format!("{f}.ports"))?,
        not_ports: authorization::ports(&o.not_ports, &format!("{f}.notPorts"))?,
        methods: strings(&o.methods, &format!("{f}.methods"))?,
        not_methods: strings(&o.not_methods, &format!("{f}.notMethods"))?,
        paths: strings(&o.paths, &format!("{f}.paths"))?,
        not_paths: strings(&o.not_paths, &format!("{f}.notPaths"))?,
    })
}

/// One `when` condition (at `f`) other than a JWT one: a request header or an L4 attribute.
fn condition(when: &crate::model::Condition, f: &str) -> Result<Condition, RuleError> {
    let (vals, nots) = (&when.values, &when.not_values);
    let (vf, nf) = (format!("{f}.values"), format!("{f}.notValues"));
    let mut c = Condition::default();
    let key = when.key.as_str();
    if let Some(header) = key
        .strip_prefix("request.headers[")
        .and_then(|h| h.strip_suffix(']'))
    {
        if header.is_empty() {
            return Err((format!("{f}.key"), "empty header name".into()));
        }
        c.key = ConditionKey::RequestHeader as i32;
        c.header = header.to_ascii_lowercase();
        c.values = strings(vals, &vf)?;
        c.not_values = strings(nots, &nf)?;
        return Ok(c);
    }
    let (k, kind) = match key {
        "source.ip" => (ConditionKey::SourceIp, Values::Ips),
        "remote.ip" => (ConditionKey::RemoteIp, Values::Ips),
        "destination.ip" => (ConditionKey::DestinationIp, Values::Ips),
        "source.namespace" => (ConditionKey::SourceNamespace, Values::Strings),
        "source.principal" => (ConditionKey::SourcePrincipal, Values::Strings),
        "destination.port" => (ConditionKey::DestinationPort, Values::Ports),
        other => {
            return Err((
                format!("{f}.key"),
                format!(
                    "unsupported condition key {other:?} (request.headers[...], \
                     source.ip, remote.ip, source.namespace, source.principal, \
                     destination.ip, destination.port)"
                ),
            ));
        }
    };
    c.key = k as i32;
    match kind {
        Values::Ips => {
            c.ip_values = ips(vals, &vf)?;
            c.not_ip_values = ips(nots, &nf)?;
        }
        Values::Strings => {
            c.values = strings(vals, &vf)?;
            c.not_values = strings(nots, &nf)?;
        }
        Values::Ports => {
            c.port_values = authorization::ports(vals, &vf)?;
            c.not_port_values = authorization::ports(nots, &nf)?;
        }
    }
    Ok(c)
}

/// Istio's string patterns as waypoint string matches.
fn strings(values: &[String], field: &str) -> Result<Vec<StringMatch>, RuleError> {
    use api::security::string_match::MatchType;
    Ok(authorization::strings(values, field)?
        .into_iter()
        .filter_map(|m| m.match_type)
        .map(|t| StringMatch {
            kind: Some(match t {
                MatchType::Exact(s) => string_match::Kind::Exact(s),
                MatchType::Prefix(s) => string_match::Kind::Prefix(s),
                MatchType::Suffix(s) => string_match::Kind::Suffix(s),
                MatchType::Presence(()) => string_match::Kind::Present(()),
            }),
            ignore_case: false,
        })
        .collect())
}

fn ips(values: &[String], field: &str) -> Result<Vec<IpBlock>, RuleError> {
    Ok(authorization::ips(values, field)?
        .into_iter()
        .map(|a| IpBlock {
            address: a.address,
            prefix_len: a.length,
        })
        .collect())
}

/// `serviceAccounts` (`sa` or `ns/sa`) as exact principals.
fn accounts(values: &[String], namespace: &str, options: &TranslateOptions) -> Vec<StringMatch> {
    values
        .iter()
        .map(|v| {
            let (ns, sa) = v.split_once('/').unwrap_or((namespace, v));
            super::routes::exact_match(&format!("{}/ns/{ns}/sa/{sa}", options.trust_domain))
        })
        .collect()
}
