//! Linkerd ServiceProfile → per-route timeouts and retryability, the
//! service's retry budget, and weighted destination overrides.
//!
//! Linkerd conditions nest (`all`, `any`, `not`); they are flattened into
//! alternatives of simple conditions (disjunctive normal form), which is what
//! a route's list of matches expresses.

use api::prost_types::Duration;
use api::waypoint::{RetryBudget, RetryPolicy, RouteMatch, WeightedDestination, path_match};

use super::super::service_key::ServiceKey;
use super::catalog::{At, Catalog, Invalid, Obj};
use super::parts;
use super::values;
use crate::model::Problem;
use crate::model::routes::{RequestMatch, ServiceProfile};

/// Most alternatives one condition may expand to.
const MAX_ALTERNATIVES: usize = 64;
/// Deepest nesting of conditions accepted.
const MAX_DEPTH: usize = 16;
/// Retries of a retryable route per request; Linkerd bounds retries by the
/// budget only, a waypoint also by this cap.
pub(crate) const PROFILE_RETRY_ATTEMPTS: u32 = 3;

/// Linkerd's default budget: 20 % more requests, 10 retries per second,
/// counted over 10 s.
fn default_budget() -> RetryBudget {
    RetryBudget {
        retry_ratio: 0.2,
        min_retries_per_second: 10,
        ttl: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
    }
}

/// One route of a profile.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ProfileRoute {
    /// Route name.
    pub name: String,
    /// Alternatives.
    pub matches: Vec<RouteMatch>,
    /// Request timeout.
    pub timeout: Option<Duration>,
    /// Retries, for retryable routes.
    pub retry: Option<RetryPolicy>,
}

/// What one ServiceProfile contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Profile {
    /// The object.
    pub obj: Obj,
    /// The service (`None`: a client-side profile, not used by waypoints).
    pub service: Option<ServiceKey>,
    /// Routes in order.
    pub routes: Vec<ProfileRoute>,
    /// Retry budget of the service (the default one when a route is
    /// retryable and none is given).
    pub budget: Option<RetryBudget>,
    /// Weighted destinations replacing the service (empty: none).
    pub overrides: Vec<WeightedDestination>,
}

/// Translates a ServiceProfile; its name is the service's FQDN.
pub(crate) fn service_profile(
    obj: &Obj,
    sp: &ServiceProfile,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<Profile, Invalid> {
    let mut out = Profile {
        obj: obj.clone(),
        service: None,
        routes: Vec::new(),
        budget: None,
        overrides: Vec::new(),
    };
    let service = catalog
        .require_host(&obj.name, &obj.namespace, "metadata.name")
        .map_err(|mut e| {
            e.message.push_str(" (the name must be the service's FQDN)");
            e
        })?;
    if service.namespace != obj.namespace {
        warnings.push(obj.problem(
            "metadata.namespace",
            "warning: a client-side profile (in the client's namespace) does not apply at waypoints; ignored",
        ));
        return Ok(out);
    }
    for (i, r) in sp.spec.routes.iter().enumerate() {
        let f = format!("spec.routes[{i}]");
        let condition = r
            .condition
            .as_ref()
            .ok_or_else(|| Invalid::new(format!("{f}.condition"), "missing"))?;
        let matches = matches(condition, &format!("{f}.condition"))?;
        let timeout = match &r.timeout {
            Some(t) => values::optional_duration(t).at(&format!("{f}.timeout"))?,
            None => None,
        };
        let retry = r.is_retryable.then(|| RetryPolicy {
            attempts: PROFILE_RETRY_ATTEMPTS,
            retry_on: vec!["5xx".to_string()],
            retriable_status_codes: Vec::new(),
            backoff: None,
            // The profile asserts the route is safe to retry.
            retry_non_idempotent: true,
        });
        let name = if r.name.is_empty() {
            format!("route-{i}")
        } else {
            r.name.clone()
        };
        out.routes.push(ProfileRoute {
            name,
            matches,
            timeout,
            retry,
        });
    }
    out.budget = match &sp.spec.retry_budget {
        Some(b) => {
            if !b.retry_ratio.is_finite() || b.retry_ratio < 0.0 || b.retry_ratio > 1000.0 {
                return Err(Invalid::new(
                    "spec.retryBudget.retryRatio",
                    format!("{} is not a ratio between 0 and 1000", b.retry_ratio),
                ));
            }
            Some(RetryBudget {
                retry_ratio: b.retry_ratio,
                min_retries_per_second: b.min_retries_per_second,
                ttl: Some(values::positive_duration(&b.ttl).at("spec.retryBudget.ttl")?),
            })
        }
        None if out.routes.iter().any(|r| r.retry.is_some()) => Some(default_budget()),
        None => None,
    };
    let mut overrides = Vec::new();
    let mut raw = Vec::new();
    for (i, d) in sp.spec.dst_overrides.iter().enumerate() {
        let f = format!("spec.dstOverrides[{i}]");
        let (host, port) = match d.authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Invalid::new(format!("{f}.authority"), format!("{p:?} is not a port"))
                })?,
            ),
            None => (d.authority.as_str(), 0),
        };
        let key = catalog.require_host(host, &obj.namespace, format!("{f}.authority"))?;
        raw.push(values::weight_milli(&d.weight).at(&format!("{f}.weight"))?);
        overrides.push(key.destination(u32::from(port), ""));
    }
    if !raw.is_empty() {
        out.overrides = parts::weighted(overrides, &raw, "spec.dstOverrides")?;
    }
    out.service = Some(service);
    Ok(out)
}

/// A simple condition, possibly negated.
#[derive(Clone, Debug, PartialEq)]
enum Literal {
    Method(String, bool),
    Path(String, bool),
}

type Conjunction = Vec<Literal>;

/// Expands a condition into alternatives of conjunctions.
fn dnf(m: &RequestMatch, field: &str, depth: usize) -> Result<Vec<Conjunction>, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid::new(field, "conditions nest too deeply"));
    }
    // The parts present in one RequestMatch must all hold.
    let mut result: Vec<Conjunction> = vec![Vec::new()];
    if let Some(method) = &m.method {
        let method = parts::method(method, &format!("{field}.method"))?;
        result = product(result, vec![vec![Literal::Method(method, false)]], field)?;
    }
    if let Some(p) = &m.path_regex {
        let p = values::regex(p).at(&format!("{field}.pathRegex"))?;
        result = product(result, vec![vec![Literal::Path(p, false)]], field)?;
    }
    for (i, a) in m.all.iter().enumerate() {
        result = product(
            result,
            dnf(a, &format!("{field}.all[{i}]"), depth + 1)?,
            field,
        )?;
    }
    if !m.any.is_empty() {
        let mut alternatives = Vec::new();
        for (i, a) in m.any.iter().enumerate() {
            alternatives.extend(dnf(a, &format!("{field}.any[{i}]"), depth + 1)?);
        }
        result = product(result, alternatives, field)?;
    }
    if let Some(n) = &m.not {
        // not (A or B) = not A and not B; not (x and y) = not x or not y.
        let inner = dnf(n, &format!("{field}.not"), depth + 1)?;
        let mut negated: Vec<Conjunction> = vec![Vec::new()];
        for conjunction in inner {
            let alternatives = conjunction
                .into_iter()
                .map(|l| {
                    vec![match l {
                        Literal::Method(m, neg) => Literal::Method(m, !neg),
                        Literal::Path(p, neg) => Literal::Path(p, !neg),
                    }]
                })
                .collect::<Vec<_>>();
            if alternatives.is_empty() {
                // `not` of "everything" matches nothing.
                return Ok(Vec::new());
            }
            negated = product(negated, alternatives, field)?;
        }
        result = product(result, negated, field)?;
    }
    Ok(result)
}

fn product(
    a: Vec<Conjunction>,
    b: Vec<Conjunction>,
    field: &str,
) -> Result<Vec<Conjunction>, Invalid> {
    if a.len().saturating_mul(b.len()) > MAX_ALTERNATIVES {
        return Err(Invalid::new(
            field,
            format!("the condition expands to more than {MAX_ALTERNATIVES} alternatives"),
        ));
    }
    let mut out = Vec::new();
    for x in &a {
        for y in &b {
            let mut c = x.clone();
            c.extend(y.iter().cloned());
            out.push(c);
        }
    }
    Ok(out)
}

/// A condition as route matches; alternatives that can never hold (two
/// different methods) are dropped.
fn matches(condition: &RequestMatch, field: &str) -> Result<Vec<RouteMatch>, Invalid> {
    let mut out = Vec::new();
    'alternatives: for conjunction in dnf(condition, field, 0)? {
        let mut m = RouteMatch::default();
        for literal in conjunction {
            match literal {
                Literal::Method(name, false) => match &m.method {
                    Some(existing) if *existing != parts::exact(&name) => continue 'alternatives,
                    _ => m.method = Some(parts::exact(&name)),
                },
                Literal::Method(name, true) => m.not_methods.push(parts::exact(&name)),
                Literal::Path(p, false) => {
                    if m.path.is_some() {
                        return Err(Invalid::new(
                            field,
                            "several pathRegex conditions that must all hold are not supported; combine them into one",
                        ));
                    }
                    m.path = Some(parts::path(path_match::Kind::Regex(p), false));
                }
                Literal::Path(p, true) => m
                    .not_paths
                    .push(parts::path(path_match::Kind::Regex(p), false)),
            }
        }
        if m.method.as_ref().is_some_and(|x| m.not_methods.contains(x)) {
            continue;
        }
        out.push(m);
    }
    if out.is_empty() {
        return Err(Invalid::new(field, "the condition can never match"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rm(json: serde_json::Value) -> RequestMatch {
        crate::model::routes::decode(&json).unwrap()
    }

    #[test]
    fn flattens_nested_conditions() {
        let c = rm(serde_json::json!({
            "all": [
                {"any": [{"method": "GET"}, {"method": "HEAD"}]},
                {"pathRegex": "/books/[0-9]+"},
                {"not": {"any": [{"pathRegex": "/books/0"}, {"method": "HEAD"}]}}
            ]
        }));
        let m = matches(&c, "c").unwrap();
        // The HEAD alternative contradicts `not HEAD` and is dropped.
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].method, Some(parts::exact("GET")));
        assert_eq!(m[0].not_methods, vec![parts::exact("HEAD")]);
        assert_eq!(m[0].not_paths.len(), 1);
        assert!(matches!(
            m[0].path.as_ref().unwrap().kind,
            Some(path_match::Kind::Regex(_))
        ));
    }

    #[test]
    fn contradictions_and_limits() {
        let both = rm(serde_json::json!({"all": [{"method": "GET"}, {"method": "POST"}]}));
        assert!(matches(&both, "c").unwrap_err().message.contains("never"));
        let everything = rm(serde_json::json!({}));
        assert_eq!(
            matches(&everything, "c").unwrap(),
            vec![RouteMatch::default()]
        );
        let wide: Vec<serde_json::Value> = (0..9)
            .map(|_| serde_json::json!({"any": [{"method": "GET"}, {"method": "PUT"}]}))
            .collect();
        let big = rm(serde_json::json!({ "all": wide }));
        assert!(
            matches(&big, "c")
                .unwrap_err()
                .message
                .contains("alternatives")
        );
        let bad = rm(serde_json::json!({"pathRegex": "("}));
        assert_eq!(matches(&bad, "c").unwrap_err().field, "c.pathRegex");
    }
}
