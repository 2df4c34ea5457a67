//! L4 authorization as Istio evaluates it: any matching DENY denies; otherwise, if ALLOW
//! policies apply to the workload, one must match; otherwise the connection is allowed.
//!
//! Matching follows Istio's ztunnel: a policy matches if any rule matches; a rule if all its
//! clauses match (a rule without clauses matches everything, a policy without rules
//! nothing); a clause if any of its matches matches (a clause without matches matches); a
//! match if, for every field, the value is in the positive list (when it has one) and in no
//! negative list. A match with no fields at all matches nothing. A connection without a peer
//! identity has no principal, namespace or service account, so it never satisfies such a
//! positive condition and always satisfies such a negative one: this is how STRICT mTLS
//! (`not_principals: [presence]` in a DENY policy) refuses plaintext.

use std::net::IpAddr;

use api::security::{self as xds, string_match::MatchType};
use hbone::Identity;

use super::convert::{self, InvalidResource};
use super::model::Workload;

/// A connection to be authorized at its destination.
#[derive(Debug)]
pub struct AuthzRequest<'a> {
    /// The verified peer identity (None for plaintext).
    pub source_identity: Option<&'a Identity>,
    /// The original client IP.
    pub source_ip: IpAddr,
    /// The local workload being connected to.
    pub destination: &'a Workload,
    /// The destination port on that workload.
    pub destination_port: u16,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, naming the policy (or the absence of a matching ALLOW).
    Deny(String),
}

/// Which workloads a policy applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scope {
    /// Every workload of the mesh.
    Global,
    /// Workloads of the policy's namespace.
    Namespace,
    /// Workloads that name the policy in their `authorization_policies`.
    WorkloadSelector,
}

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Action {
    /// Allows the connection.
    Allow,
    /// Denies the connection.
    Deny,
}

/// A validated authorization policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Which workloads it applies to.
    pub scope: Scope,
    /// What it does when it matches.
    pub action: Action,
    /// Rules → clauses → alternatives.
    pub rules: Vec<Vec<Vec<Match>>>,
    /// Evaluated and logged, never enforced.
    pub dry_run: bool,
}

/// Conditions on a connection; see the module documentation for how they combine.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Match {
    /// Source namespace is one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    /// Source namespace is none of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    /// Source service account (namespace, name) is one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<(String, String)>,
    /// Source service account is none of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<(String, String)>,
    /// Source identity, without `spiffe://`, is one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    /// Source identity is none of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    /// Source IP is in one of these ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<Cidr>,
    /// Source IP is in none of these ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<Cidr>,
    /// Destination IP is in one of these ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<Cidr>,
    /// Destination IP is in none of these ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<Cidr>,
    /// Destination port is one of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    /// Destination port is none of these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
}

/// A string condition.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StringMatch {
    /// Equal to.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

/// An IP prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cidr {
    /// Network address.
    pub address: IpAddr,
    /// Prefix length in bits.
    pub length: u8,
}

/// The facts about a connection that policies look at.
struct Connection<'a> {
    /// The peer identity without `spiffe://`, if any.
    principal: Option<String>,
    identity: Option<&'a Identity>,
    source_ip: IpAddr,
    destination_ips: &'a [IpAddr],
    destination_port: u16,
}

impl Policy {
    /// `namespace/name`, the key workloads use to reference it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn matches(&self, conn: &Connection<'_>) -> bool {
        self.rules.iter().any(|rule| {
            rule.iter().all(|clause| {
                clause.is_empty() || clause.iter().any(|m| !m.is_empty() && m.matches(conn))
            })
        })
    }
}

impl Match {
    fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    fn matches(&self, conn: &Connection<'_>) -> bool {
        let namespace = conn.identity.map(Identity::namespace).unwrap_or_default();
        let principal = conn.principal.as_deref();
        let source = conn.source_ip.to_canonical();
        field(&self.destination_ips, &self.not_destination_ips, |c| {
            conn.destination_ips
                .iter()
                .any(|ip| c.contains(ip.to_canonical()))
        }) && field(&self.source_ips, &self.not_source_ips, |c| {
            c.contains(source)
        }) && field(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == conn.destination_port
        }) && field(
            &self.service_accounts,
            &self.not_service_accounts,
            |(ns, sa)| {
                conn.identity
                    .is_some_and(|id| id.namespace() == ns && id.service_account() == sa)
            },
        ) && field(&self.principals, &self.not_principals, |m| {
            principal.is_some_and(|p| m.matches(p))
        }) && field(&self.namespaces, &self.not_namespaces, |m| {
            m.matches(namespace)
        })
    }
}

/// One field of a match: some positive value holds (if any are listed) and no negative does.
fn field<T>(positive: &[T], negative: &[T], holds: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&holds)) && !negative.iter().any(holds)
}

impl StringMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.length)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.length)
            }
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[whole] & mask) == (b[whole] & mask)
}

/// Evaluates `policies` (those applying to the destination) for `request`, in Istio's order.
/// Dry-run policies are evaluated and logged only.
pub(crate) fn evaluate<'p>(
    policies: impl IntoIterator<Item = &'p Policy>,
    request: &AuthzRequest<'_>,
) -> Decision {
    let conn = Connection {
        principal: request
            .source_identity
            .map(|id| id.to_string())
            .and_then(|id| id.strip_prefix("spiffe://").map(str::to_owned)),
        identity: request.source_identity,
        source_ip: request.source_ip,
        destination_ips: &request.destination.addresses,
        destination_port: request.destination_port,
    };
    let (mut allow, mut deny) = (Vec::new(), Vec::new());
    for policy in policies {
        if policy.dry_run {
            let matched = policy.matches(&conn);
            tracing::info!(
                policy = %policy.key(), action = ?policy.action, matched,
                destination = %request.destination.uid, port = request.destination_port,
                source = %request.source_ip,
                "dry-run authorization policy evaluated (not enforced)"
            );
            continue;
        }
        match policy.action {
            Action::Allow => allow.push(policy),
            Action::Deny => deny.push(policy),
        }
    }
    if let Some(policy) = deny.iter().find(|p| p.matches(&conn)) {
        return Decision::Deny(format!("denied by {}", policy.key()));
    }
    if allow.is_empty() || allow.iter().any(|p| p.matches(&conn)) {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".into())
    }
}

/// Validates and converts an `Authorization` resource.
pub(crate) fn convert(policy: xds::Authorization) -> Result<Policy, InvalidResource> {
    if policy.name.is_empty() {
        return Err(InvalidResource::Empty("Authorization.name".into()));
    }
    if policy.namespace.is_empty() {
        return Err(InvalidResource::Empty("Authorization.namespace".into()));
    }
    let scope = match xds::Scope::try_from(policy.scope) {
        Ok(xds::Scope::Global) => Scope::Global,
        Ok(xds::Scope::Namespace) => Scope::Namespace,
        Ok(xds::Scope::WorkloadSelector) => Scope::WorkloadSelector,
        Err(_) => {
            return Err(InvalidResource::Enum {
                field: "Authorization.scope".into(),
                value: policy.scope,
            });
        }
    };
    let action = match xds::Action::try_from(policy.action) {
        Ok(xds::Action::Allow) => Action::Allow,
        Ok(xds::Action::Deny) => Action::Deny,
        Err(_) => {
            return Err(InvalidResource::Enum {
                field: "Authorization.action".into(),
                value: policy.action,
            });
        }
    };
    let mut rules = Vec::with_capacity(policy.rules.len());
    for (r, rule) in policy.rules.iter().enumerate() {
        let mut clauses = Vec::with_capacity(rule.clauses.len());
        for (c, clause) in rule.clauses.iter().enumerate() {
            let matches = clause
                .matches
                .iter()
                .enumerate()
                .map(|(m, x)| convert_match(x, &format!("rules[{r}].clauses[{c}].matches[{m}]")))
                .collect::<Result<Vec<_>, _>>()?;
            clauses.push(matches);
        }
        rules.push(clauses);
    }
    Ok(Policy {
        name: policy.name,
        namespace: policy.namespace,
        scope,
        action,
        rules,
        dry_run: policy.dry_run,
    })
}

// Istio's ztunnel silently drops unreadable entries; here they refuse the policy instead,
// since dropping one from a positive list could widen what an ALLOW policy lets in.
fn convert_match(m: &xds::Match, at: &str) -> Result<Match, InvalidResource> {
    let strings = |list: &[xds::StringMatch], name: &str| {
        list.iter()
            .enumerate()
            .map(|(i, s)| string_match(s, &format!("{at}.{name}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let cidrs = |list: &[xds::Address], name: &str| {
        list.iter()
            .enumerate()
            .map(|(i, a)| cidr(a, &format!("{at}.{name}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let ports = |list: &[u32], name: &str| {
        list.iter()
            .enumerate()
            .map(|(i, p)| convert::port(*p, || format!("{at}.{name}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    let accounts = |list: &[xds::ServiceAccountMatch]| {
        list.iter()
            .map(|s| (s.namespace.clone(), s.service_account.clone()))
            .collect()
    };
    Ok(Match {
        namespaces: strings(&m.namespaces, "namespaces")?,
        not_namespaces: strings(&m.not_namespaces, "not_namespaces")?,
        service_accounts: accounts(&m.service_accounts),
        not_service_accounts: accounts(&m.not_service_accounts),
        principals: strings(&m.principals, "principals")?,
        not_principals: strings(&m.not_principals, "not_principals")?,
        source_ips: cidrs(&m.source_ips, "source_ips")?,
        not_source_ips: cidrs(&m.not_source_ips, "not_source_ips")?,
        destination_ips: cidrs(&m.destination_ips, "destination_ips")?,
        not_destination_ips: cidrs(&m.not_destination_ips, "not_destination_ips")?,
        destination_ports: ports(&m.destination_ports, "destination_ports")?,
        not_destination_ports: ports(&m.not_destination_ports, "not_destination_ports")?,
    })
}

fn string_match(s: &xds::StringMatch, field: &str) -> Result<StringMatch, InvalidResource> {
    Ok(match &s.match_type {
        Some(MatchType::Exact(v)) => StringMatch::Exact(v.clone()),
        Some(MatchType::Prefix(v)) => StringMatch::Prefix(v.clone()),
        Some(MatchType::Suffix(v)) => StringMatch::Suffix(v.clone()),
        Some(MatchType::Presence(())) => StringMatch::Presence,
        None => return Err(InvalidResource::Unset(format!("{field}.match_type"))),
    })
}

fn cidr(a: &xds::Address, field: &str) -> Result<Cidr, InvalidResource> {
    let address = convert::ip(&a.address, || format!("{field}.address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    match u8::try_from(a.length) {
        Ok(length) if a.length <= max => Ok(Cidr { address, length }),
        _ => Err(InvalidResource::PrefixLength {
            field: format!("{field}.length"),
            length: a.length,
            max,
        }),
    }
}

#[cfg(test)]
mod tests;
