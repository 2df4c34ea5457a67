//! L7 authorization as Istio evaluates AuthorizationPolicy: a request is denied when any
//! applicable DENY policy matches; otherwise, when ALLOW policies apply, it must match one of
//! them. Workload-scoped policies apply only once the endpoint is chosen, so evaluation has
//! two steps: [`Policies::check_request`] before routing and [`Policies::check_endpoint`] per
//! chosen endpoint.

use std::collections::HashSet;
use std::net::IpAddr;

use api::waypoint::{self as pb, AuthorizationAction, ConditionKey, PolicyScope};
use http::HeaderMap;

use super::compile::ConfigError;
use super::matching::StringMatcher;

/// An address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    address: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    fn compile(b: &pb::IpBlock, field: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError(format!("{field}: invalid address block"));
        let address = match b.address.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(b.address.as_slice()).map_err(|_| bad())?),
            16 => IpAddr::from(<[u8; 16]>::try_from(b.address.as_slice()).map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        let max = if address.is_ipv4() { 32 } else { 128 };
        if b.prefix_len > max {
            return Err(bad());
        }
        Ok(Self {
            address,
            prefix_len: b.prefix_len as u8,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn cidrs(bs: &[pb::IpBlock], field: &str) -> Result<Vec<Cidr>, ConfigError> {
    bs.iter()
        .enumerate()
        .map(|(i, b)| Cidr::compile(b, &format!("{field}[{i}]")))
        .collect()
}

fn ports(ps: &[u32], field: &str) -> Result<Vec<u16>, ConfigError> {
    ps.iter()
        .map(|p| {
            u16::try_from(*p).map_err(|_| ConfigError(format!("{field}: port {p} out of range")))
        })
        .collect()
}

/// The request attributes only HTTP provides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpAttributes<'a> {
    /// Authority without port.
    pub host: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
}

/// Everything a policy may look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    /// Caller principal without `spiffe://` (`td/ns/x/sa/y`).
    pub principal: Option<&'a str>,
    /// Caller namespace.
    pub namespace: Option<&'a str>,
    /// Peer IP.
    pub source_ip: IpAddr,
    /// Original client IP.
    pub remote_ip: IpAddr,
    /// Destination (service VIP) IP.
    pub destination_ip: IpAddr,
    /// Destination (service) port.
    pub destination_port: u16,
    /// HTTP attributes; `None` for a connection checked at L4.
    pub http: Option<HttpAttributes<'a>>,
}

/// A caller's principal as policies name it: the SPIFFE ID without `spiffe://`.
pub(crate) fn principal(id: &hbone::Identity) -> String {
    format!(
        "{}/ns/{}/sa/{}",
        id.trust_domain(),
        id.namespace(),
        id.service_account()
    )
}

/// The request attributes workload-scoped policies need after routing has edited the request:
/// an owned copy of the [`Input`] the first step judged.
pub(crate) struct AuthzSnapshot {
    principal: Option<String>,
    namespace: Option<String>,
    source_ip: IpAddr,
    remote_ip: IpAddr,
    destination_ip: IpAddr,
    destination_port: u16,
    host: String,
    method: String,
    path: String,
    headers: HeaderMap,
    /// The first step's result.
    pub pending: Pending,
}

impl AuthzSnapshot {
    /// Keeps what `input` (of an HTTP request) says, with the first step's result.
    pub(crate) fn of(input: &Input<'_>, pending: Pending) -> Self {
        let http = input.http.as_ref();
        Self {
            principal: input.principal.map(str::to_owned),
            namespace: input.namespace.map(str::to_owned),
            source_ip: input.source_ip,
            remote_ip: input.remote_ip,
            destination_ip: input.destination_ip,
            destination_port: input.destination_port,
            host: http.map_or_else(String::new, |h| h.host.to_owned()),
            method: http.map_or_else(String::new, |h| h.method.to_owned()),
            path: http.map_or_else(String::new, |h| h.path.to_owned()),
            headers: http.map_or_else(HeaderMap::new, |h| h.headers.clone()),
            pending,
        }
    }

    /// The policy input.
    pub(crate) fn input(&self) -> Input<'_> {
        Input {
            principal: self.principal.as_deref(),
            namespace: self.namespace.as_deref(),
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            destination_ip: self.destination_ip,
            destination_port: self.destination_port,
            http: Some(HttpAttributes {
                host: &self.host,
                method: &self.method,
                path: &self.path,
                headers: &self.headers,
            }),
        }
    }
}

/// How a field that needs HTTP is treated when the check has no HTTP attributes (Istio's rule
/// for TCP traffic): an ALLOW rule using it cannot match, a DENY rule ignores it (denying more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    Fails,
    Holds,
}

fn any_of(ms: &[StringMatcher], value: Option<&str>) -> bool {
    value.is_some_and(|v| ms.iter().any(|m| m.matches(v)))
}

#[derive(Debug)]
struct SourceMatch {
    principals: Vec<StringMatcher>,
    not_principals: Vec<StringMatcher>,
    namespaces: Vec<StringMatcher>,
    not_namespaces: Vec<StringMatcher>,
    ip_blocks: Vec<Cidr>,
    not_ip_blocks: Vec<Cidr>,
    remote_ip_blocks: Vec<Cidr>,
    not_remote_ip_blocks: Vec<Cidr>,
}

impl SourceMatch {
    fn compile(s: &pb::Source, f: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            principals: StringMatcher::compile_all(&s.principals, &format!("{f}.principals"))?,
            not_principals: StringMatcher::compile_all(
                &s.not_principals,
                &format!("{f}.not_principals"),
            )?,
            namespaces: StringMatcher::compile_all(&s.namespaces, &format!("{f}.namespaces"))?,
            not_namespaces: StringMatcher::compile_all(
                &s.not_namespaces,
                &format!("{f}.not_namespaces"),
            )?,
            ip_blocks: cidrs(&s.ip_blocks, &format!("{f}.ip_blocks"))?,
            not_ip_blocks: cidrs(&s.not_ip_blocks, &format!("{f}.not_ip_blocks"))?,
            remote_ip_blocks: cidrs(&s.remote_ip_blocks, &format!("{f}.remote_ip_blocks"))?,
            not_remote_ip_blocks: cidrs(
                &s.not_remote_ip_blocks,
                &format!("{f}.not_remote_ip_blocks"),
            )?,
        })
    }

    fn matches(&self, input: &Input<'_>) -> bool {
        let in_any = |bs: &[Cidr], ip: IpAddr| bs.iter().any(|b| b.contains(ip));
        (self.principals.is_empty() || any_of(&self.principals, input.principal))
            && !any_of(&self.not_principals, input.principal)
            && (self.namespaces.is_empty() || any_of(&self.namespaces, input.namespace))
            && !any_of(&self.not_namespaces, input.namespace)
            && (self.ip_blocks.is_empty() || in_any(&self.ip_blocks, input.source_ip))
            && !in_any(&self.not_ip_blocks, input.source_ip)
            && (self.remote_ip_blocks.is_empty() || in_any(&self.remote_ip_blocks, input.remote_ip))
            && !in_any(&self.not_remote_ip_blocks, input.remote_ip)
    }
}

/// Reads one HTTP attribute.
type Field = for<'b> fn(&'b HttpAttributes<'b>) -> &'b str;

#[derive(Debug)]
struct OperationMatch {
    hosts: Vec<StringMatcher>,
    not_hosts: Vec<StringMatcher>,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
    methods: Vec<StringMatcher>,
    not_methods: Vec<StringMatcher>,
    paths: Vec<StringMatcher>,
    not_paths: Vec<StringMatcher>,
}

/// Host conditions compare case-insensitively, whatever the match says.
fn ignore_case(mut ms: Vec<StringMatcher>) -> Vec<StringMatcher> {
    for m in &mut ms {
        match m {
            StringMatcher::Exact(_, ic)
            | StringMatcher::Prefix(_, ic)
            | StringMatcher::Suffix(_, ic) => {
                *ic = true;
            }
            StringMatcher::Regex(_) | StringMatcher::Present => {}
        }
    }
    ms
}

impl OperationMatch {
    fn compile(o: &pb::Operation, f: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            hosts: ignore_case(StringMatcher::compile_all(&o.hosts, &format!("{f}.hosts"))?),
            not_hosts: ignore_case(StringMatcher::compile_all(
                &o.not_hosts,
                &format!("{f}.not_hosts"),
            )?),
            ports: ports(&o.ports, &format!("{f}.ports"))?,
            not_ports: ports(&o.not_ports, &format!("{f}.not_ports"))?,
            methods: StringMatcher::compile_all(&o.methods, &format!("{f}.methods"))?,
            not_methods: StringMatcher::compile_all(&o.not_methods, &format!("{f}.not_methods"))?,
            paths: StringMatcher::compile_all(&o.paths, &format!("{f}.paths"))?,
            not_paths: StringMatcher::compile_all(&o.not_paths, &format!("{f}.not_paths"))?,
        })
    }

    fn matches(&self, input: &Input<'_>, missing: Missing) -> bool {
        let port = input.destination_port;
        if (!self.ports.is_empty() && !self.ports.contains(&port)) || self.not_ports.contains(&port)
        {
            return false;
        }
        let http_fields: [(&[StringMatcher], bool, Field); 6] = [
            (&self.hosts, true, |h| h.host),
            (&self.not_hosts, false, |h| h.host),
            (&self.methods, true, |h| h.method),
            (&self.not_methods, false, |h| h.method),
            (&self.paths, true, |h| h.path),
            (&self.not_paths, false, |h| h.path),
        ];
        for (ms, positive, get) in http_fields {
            if ms.is_empty() {
                continue;
            }
            let ok = match &input.http {
                Some(h) => any_of(ms, Some(get(h))) == positive,
                None => missing == Missing::Holds,
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

#[derive(Debug)]
struct ConditionMatch {
    key: ConditionKey,
    header: String,
    values: Vec<StringMatcher>,
    not_values: Vec<StringMatcher>,
    ips: Vec<Cidr>,
    not_ips: Vec<Cidr>,
    ports: Vec<u16>,
    not_ports: Vec<u16>,
}

impl ConditionMatch {
    fn compile(c: &pb::Condition, f: &str) -> Result<Self, ConfigError> {
        let key = ConditionKey::try_from(c.key)
            .ok()
            .filter(|k| *k != ConditionKey::Unspecified)
            .ok_or_else(|| ConfigError(format!("{f}.key: unknown condition key {}", c.key)))?;
        if key == ConditionKey::RequestHeader && c.header.is_empty() {
            return Err(ConfigError(format!("{f}.header: empty")));
        }
        Ok(Self {
            key,
            header: c.header.to_ascii_lowercase(),
            values: StringMatcher::compile_all(&c.values, &format!("{f}.values"))?,
            not_values: StringMatcher::compile_all(&c.not_values, &format!("{f}.not_values"))?,
            ips: cidrs(&c.ip_values, &format!("{f}.ip_values"))?,
            not_ips: cidrs(&c.not_ip_values, &format!("{f}.not_ip_values"))?,
            ports: ports(&c.port_values, &format!("{f}.port_values"))?,
            not_ports: ports(&c.not_port_values, &format!("{f}.not_port_values"))?,
        })
    }

    fn strings(&self, value: Option<&str>) -> bool {
        (self.values.is_empty() || any_of(&self.values, value)) && !any_of(&self.not_values, value)
    }

    fn ip(&self, ip: IpAddr) -> bool {
        (self.ips.is_empty() || self.ips.iter().any(|b| b.contains(ip)))
            && !self.not_ips.iter().any(|b| b.contains(ip))
    }

    fn matches(&self, input: &Input<'_>, missing: Missing) -> bool {
        match self.key {
            ConditionKey::RequestHeader => match &input.http {
                Some(h) => {
                    let values = h.headers.get_all(self.header.as_str());
                    let mut any = false;
                    let mut none_negated = true;
                    for v in values.iter().filter_map(|v| v.to_str().ok()) {
                        any |= self.values.is_empty() || any_of(&self.values, Some(v));
                        none_negated &= !any_of(&self.not_values, Some(v));
                    }
                    let present = h.headers.contains_key(self.header.as_str());
                    (if present { any } else { self.values.is_empty() }) && none_negated
                }
                None => missing == Missing::Holds,
            },
            ConditionKey::SourceIp => self.ip(input.source_ip),
            ConditionKey::RemoteIp => self.ip(input.remote_ip),
            ConditionKey::DestinationIp => self.ip(input.destination_ip),
            ConditionKey::SourceNamespace => self.strings(input.namespace),
            ConditionKey::SourcePrincipal => self.strings(input.principal),
            ConditionKey::DestinationPort => {
                let p = input.destination_port;
                (self.ports.is_empty() || self.ports.contains(&p)) && !self.not_ports.contains(&p)
            }
            ConditionKey::Unspecified => false,
        }
    }
}

#[derive(Debug)]
struct Rule {
    from: Vec<SourceMatch>,
    to: Vec<OperationMatch>,
    when: Vec<ConditionMatch>,
}

impl Rule {
    fn matches(&self, input: &Input<'_>, missing: Missing) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(input)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(input, missing)))
            && self.when.iter().all(|c| c.matches(input, missing))
    }
}

#[derive(Debug)]
enum Scope {
    Waypoint,
    Services(HashSet<String>),
    Workloads(HashSet<String>),
}

#[derive(Debug)]
struct Policy {
    name: String,
    deny: bool,
    /// A DENY policy answering 404 (a route table's miss).
    not_found: bool,
    scope: Scope,
    rules: Vec<Rule>,
}

impl Policy {
    /// The denial of a request this DENY policy matches.
    fn denial(&self) -> Denied {
        if self.not_found {
            Denied::NoRoute(self.name.clone())
        } else {
            Denied::Policy(self.name.clone())
        }
    }

    fn matches(&self, input: &Input<'_>) -> bool {
        let missing = if self.deny {
            Missing::Holds
        } else {
            Missing::Fails
        };
        self.rules.iter().any(|r| r.matches(input, missing))
    }
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// A DENY policy matched.
    #[error("denied by policy {0}")]
    Policy(String),
    /// Matched by a DENY policy standing for a route table's miss (answered 404).
    #[error("no route of policy {0} matched")]
    NoRoute(String),
    /// ALLOW policies apply and none matched.
    #[error("no ALLOW policy matched")]
    NotAllowed,
}

/// The ALLOW result before the endpoint is known.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pending {
    allow_applies: bool,
    allow_matched: bool,
}

/// Every policy this waypoint enforces.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    policies: Vec<Policy>,
    workload_allow: bool,
    workload_scoped: bool,
}

impl Policies {
    /// Compiles the waypoint's policies.
    pub(crate) fn compile(ps: &[pb::AuthorizationPolicy]) -> Result<Self, ConfigError> {
        let mut policies = Vec::with_capacity(ps.len());
        for (i, p) in ps.iter().enumerate() {
            let f = format!("authorization_policies[{i}] ({}/{})", p.namespace, p.name);
            let deny = match AuthorizationAction::try_from(p.action) {
                Ok(AuthorizationAction::Allow) => false,
                Ok(AuthorizationAction::Deny) => true,
                Err(_) => return Err(ConfigError(format!("{f}.action: unknown {}", p.action))),
            };
            let scope = match PolicyScope::try_from(p.scope) {
                Ok(PolicyScope::Waypoint) => Scope::Waypoint,
                Ok(PolicyScope::Services) => Scope::Services(p.services.iter().cloned().collect()),
                Ok(PolicyScope::Workloads) => Scope::Workloads(
                    p.workloads
                        .as_ref()
                        .map(|w| w.workload_uids.iter().cloned().collect())
                        .unwrap_or_default(),
                ),
                Err(_) => return Err(ConfigError(format!("{f}.scope: unknown {}", p.scope))),
            };
            let rules = p
                .rules
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    let rf = format!("{f}.rules[{j}]");
                    Ok(Rule {
                        from: r
                            .from
                            .iter()
                            .enumerate()
                            .map(|(k, s)| SourceMatch::compile(s, &format!("{rf}.from[{k}]")))
                            .collect::<Result<_, ConfigError>>()?,
                        to: r
                            .to
                            .iter()
                            .enumerate()
                            .map(|(k, o)| OperationMatch::compile(o, &format!("{rf}.to[{k}]")))
                            .collect::<Result<_, ConfigError>>()?,
                        when: r
                            .when
                            .iter()
                            .enumerate()
                            .map(|(k, c)| ConditionMatch::compile(c, &format!("{rf}.when[{k}]")))
                            .collect::<Result<_, ConfigError>>()?,
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
            policies.push(Policy {
                name: format!("{}/{}", p.namespace, p.name),
                deny,
                not_found: deny && p.not_found,
                scope,
                rules,
            });
        }
        let workload_scoped = policies
            .iter()
            .any(|p| matches!(p.scope, Scope::Workloads(_)));
        let workload_allow = policies
            .iter()
            .any(|p| !p.deny && matches!(p.scope, Scope::Workloads(_)));
        Ok(Self {
            policies,
            workload_allow,
            workload_scoped,
        })
    }

    /// Whether any policy is scoped to workloads (so [`Policies::check_endpoint`] has work).
    pub(crate) fn has_workload_scoped(&self) -> bool {
        self.workload_scoped
    }

    /// Evaluates the waypoint- and service-scoped policies for a request to `service`.
    pub(crate) fn check_request(
        &self,
        input: &Input<'_>,
        service: &str,
    ) -> Result<Pending, Denied> {
        let mut pending = Pending::default();
        for p in &self.policies {
            let applies = match &p.scope {
                Scope::Waypoint => true,
                Scope::Services(s) => s.contains(service),
                Scope::Workloads(_) => false,
            };
            if !applies {
                continue;
            }
            if p.deny {
                if p.matches(input) {
                    return Err(p.denial());
                }
            } else {
                pending.allow_applies = true;
                pending.allow_matched = pending.allow_matched || p.matches(input);
            }
        }
        // Without workload-scoped ALLOW policies nothing later can allow what failed here.
        if pending.allow_applies && !pending.allow_matched && !self.workload_allow {
            return Err(Denied::NotAllowed);
        }
        Ok(pending)
    }

    /// Completes the evaluation with the policies scoped to the chosen endpoint `uid`.
    pub(crate) fn check_endpoint(
        &self,
        input: &Input<'_>,
        pending: Pending,
        uid: &str,
    ) -> Result<(), Denied> {
        let mut allow_applies = pending.allow_applies;
        let mut allow_matched = pending.allow_matched;
        for p in &self.policies {
            let Scope::Workloads(uids) = &p.scope else {
                continue;
            };
            if !uids.contains(uid) {
                continue;
            }
            if p.deny {
                if p.matches(input) {
                    return Err(p.denial());
                }
            } else {
                allow_applies = true;
                allow_matched = allow_matched || p.matches(input);
            }
        }
        if allow_applies && !allow_matched {
            return Err(Denied::NotAllowed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
