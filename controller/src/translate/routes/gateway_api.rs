//! Gateway API HTTPRoute and GRPCRoute attached to Services (GAMMA) → routes,
//! each (rule, match) pair ranked by the Gateway API precedence rules.

use std::cmp::Reverse;

use api::waypoint::{
    Forward, RetryPolicy, Route, RouteMatch, WeightedDestination, path_match, route,
};

use super::super::service_key::ServiceKey;
use super::catalog::{At, Catalog, Invalid, Obj};
use super::gateway_filters::{RuleAction, service_ref};
use super::parts::{self, default_retry};
use super::values;
use crate::model::Problem;
use crate::model::routes::{
    GrpcRoute, HttpBackendRef, HttpHeaderMatch, HttpRoute, HttpRouteMatch, HttpRouteRetry,
    HttpRouteTimeouts, ParentReference,
};

/// Precedence of one (rule, match) pair; smaller sorts first. The Gateway
/// API orders: exact path, then longest prefix (regular expressions after
/// every prefix), then a method condition, most header conditions, most
/// query conditions, the oldest route, namespace/name, rule and match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    path_class: u8,
    path_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    created: String,
    namespace: String,
    name: String,
    rule: usize,
    index: usize,
}

/// A route with its precedence.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RankedRoute {
    /// Where it sorts among the routes of a service.
    pub rank: Rank,
    /// The route; a `Forward` without destinations goes to the parent
    /// Service (filled in per parent).
    pub route: Route,
}

/// A parent Service and the port the route is limited to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Parent {
    /// The Service.
    pub service: ServiceKey,
    /// Service port; `None`: every port.
    pub port: Option<u16>,
}

/// What one HTTPRoute or GRPCRoute contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Attached {
    /// The object.
    pub obj: Obj,
    /// Services it attaches to (empty: not a mesh route).
    pub parents: Vec<Parent>,
    /// Its routes.
    pub routes: Vec<RankedRoute>,
}

/// Translates an HTTPRoute.
pub(crate) fn http_route(
    obj: &Obj,
    r: &HttpRoute,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<Attached, Invalid> {
    attach(obj, &r.spec.parent_refs, catalog, warnings, |w| {
        http_rules(obj, r, catalog, w)
    })
}

/// Translates a GRPCRoute: gRPC method matches become path matches on
/// `/<service>/<method>`.
pub(crate) fn grpc_route(
    obj: &Obj,
    r: &GrpcRoute,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<Attached, Invalid> {
    attach(obj, &r.spec.parent_refs, catalog, warnings, |_| {
        grpc_rules(obj, r, catalog)
    })
}

/// What a route contributes: its Service parents and, when it has any, the
/// routes of its `rules`. A route without Service parents is not mesh
/// routing, so its rules are not read.
fn attach(
    obj: &Obj,
    refs: &[ParentReference],
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
    rules: impl FnOnce(&mut Vec<Problem>) -> Result<Vec<RankedRoute>, Invalid>,
) -> Result<Attached, Invalid> {
    let parents = parents(obj, refs, catalog, warnings)?;
    let routes = if parents.is_empty() {
        Vec::new()
    } else {
        rules(warnings)?
    };
    Ok(Attached {
        obj: obj.clone(),
        parents,
        routes,
    })
}

/// One route per match of rule `i`, ranked, each with the rule's action
/// and header edits.
fn rule_routes(
    obj: &Obj,
    i: usize,
    name: Option<&str>,
    matches: Vec<RouteMatch>,
    action: &route::Action,
    filters: &RuleAction,
    out: &mut Vec<RankedRoute>,
) {
    let rule_name = name.map_or_else(|| format!("rule-{i}"), str::to_string);
    for (j, m) in matches.into_iter().enumerate() {
        out.push(RankedRoute {
            rank: rank(obj, &m, i, j),
            route: Route {
                name: format!("{}/{}/{rule_name}/match-{j}", obj.namespace, obj.name),
                source: Some(obj.source()),
                matches: vec![m],
                action: Some(action.clone()),
                request_headers: filters.request_headers.clone(),
                response_headers: filters.response_headers.clone(),
                fault: None,
                rule_name: rule_name.clone(),
            },
        });
    }
}

fn http_rules(
    obj: &Obj,
    r: &HttpRoute,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<Vec<RankedRoute>, Invalid> {
    let mut routes = Vec::new();
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let default_match = [HttpRouteMatch::default()];
        let matches: &[HttpRouteMatch] = if rule.matches.is_empty() {
            &default_match
        } else {
            &rule.matches
        };
        let converted: Vec<(RouteMatch, bool)> = matches
            .iter()
            .enumerate()
            .map(|(j, m)| http_match(m, &format!("{field}.matches[{j}]")))
            .collect::<Result<_, _>>()?;
        let all_prefix = converted.iter().all(|(_, prefix)| *prefix);
        let action = RuleAction::from_filters(
            obj,
            catalog,
            &rule.filters,
            &format!("{field}.filters"),
            all_prefix,
            true,
        )?;
        let mut forward = forward(obj, catalog, &rule.backend_refs, &field)?;
        timeouts(&mut forward, rule.timeouts.as_ref(), &field)?;
        forward.retry = retry(rule.retry.as_ref(), &format!("{field}.retry"))?;
        forward.rewrite = action.rewrite.clone();
        forward.mirrors = action.mirrors.clone();
        let route_action = match &action.redirect {
            Some(r) => {
                if !rule.backend_refs.is_empty() {
                    warnings.push(obj.problem(
                        format!("{field}.backendRefs"),
                        "warning: a rule with a RequestRedirect filter answers with the redirect; its backendRefs are not used",
                    ));
                }
                route::Action::Redirect(r.clone())
            }
            None => route::Action::Forward(forward),
        };
        let matches = converted.into_iter().map(|(m, _)| m).collect();
        let name = rule.name.as_deref();
        rule_routes(obj, i, name, matches, &route_action, &action, &mut routes);
    }
    Ok(routes)
}

fn grpc_rules(
    obj: &Obj,
    r: &GrpcRoute,
    catalog: &Catalog<'_>,
) -> Result<Vec<RankedRoute>, Invalid> {
    let mut routes = Vec::new();
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let mut converted = Vec::new();
        for (j, m) in rule.matches.iter().enumerate() {
            let f = format!("{field}.matches[{j}]");
            let mut out = RouteMatch {
                headers: headers(&m.headers, &format!("{f}.headers"))?,
                ..Default::default()
            };
            if let Some(method) = &m.method {
                out.path = Some(grpc_path(method, &format!("{f}.method"))?);
            }
            converted.push(out);
        }
        if converted.is_empty() {
            converted.push(RouteMatch::default());
        }
        let action = RuleAction::from_filters(
            obj,
            catalog,
            &rule.filters,
            &format!("{field}.filters"),
            false,
            false,
        )?;
        let mut forward = forward(obj, catalog, &rule.backend_refs, &field)?;
        forward.retry = retry(rule.retry.as_ref(), &format!("{field}.retry"))?;
        forward.mirrors = action.mirrors.clone();
        let forward = route::Action::Forward(forward);
        let name = rule.name.as_deref();
        rule_routes(obj, i, name, converted, &forward, &action, &mut routes);
    }
    Ok(routes)
}

/// The Service parents of a route. Other parents (Gateways) are not mesh
/// routing and are skipped; a consumer route (a parent in another namespace)
/// is reported and skipped.
fn parents(
    obj: &Obj,
    refs: &[ParentReference],
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<Vec<Parent>, Invalid> {
    let mut out = Vec::new();
    for (i, p) in refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        let group = p.group.as_deref().unwrap_or("gateway.networking.k8s.io");
        if kind != "Service" {
            continue;
        }
        if !matches!(group, "" | "core") {
            warnings.push(obj.problem(
                format!("{field}.group"),
                format!(
                    "warning: a Service parent needs group \"\" (not {group:?}); parent skipped"
                ),
            ));
            continue;
        }
        let ns = p.namespace.as_deref().unwrap_or(&obj.namespace);
        if ns != obj.namespace {
            warnings.push(obj.problem(
                format!("{field}.namespace"),
                format!(
                    "warning: consumer routes (a parent Service in another namespace, {ns}) are not supported; parent skipped"
                ),
            ));
            continue;
        }
        let key = ServiceKey::new(ns, &p.name);
        if catalog.service(&key).is_none() {
            return Err(Invalid::new(
                format!("{field}.name"),
                format!("no Service {key}"),
            ));
        }
        if p.port == Some(0) {
            return Err(Invalid::new(
                format!("{field}.port"),
                "port 0 is not a port",
            ));
        }
        out.push(Parent {
            service: key,
            port: p.port,
        });
    }
    Ok(out)
}

/// One HTTPRoute match; also says whether its path is a prefix match (for
/// ReplacePrefixMatch).
fn http_match(m: &HttpRouteMatch, field: &str) -> Result<(RouteMatch, bool), Invalid> {
    let (kind, value) = match &m.path {
        Some(p) => (
            p.type_.as_deref().unwrap_or("PathPrefix"),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => ("PathPrefix", "/"),
    };
    let pf = format!("{field}.path.value");
    let path = match kind {
        "Exact" => parts::path(path_match::Kind::Exact(parts::absolute(value, &pf)?), false),
        "PathPrefix" => {
            let v = parts::absolute(value, &pf)?;
            // "/foo/" and "/foo" mean the same segments.
            let trimmed = match v.trim_end_matches('/') {
                "" => "/".to_string(),
                t => t.to_string(),
            };
            parts::path(path_match::Kind::SegmentPrefix(trimmed), false)
        }
        "RegularExpression" => parts::path_regex(value, &pf)?,
        other => {
            return Err(Invalid::new(
                format!("{field}.path.type"),
                format!("unknown path match type {other:?} (Exact, PathPrefix, RegularExpression)"),
            ));
        }
    };
    let method = match &m.method {
        Some(v) => Some(parts::exact(&parts::method(v, &format!("{field}.method"))?)),
        None => None,
    };
    let mut query_params = Vec::new();
    for (k, q) in m.query_params.iter().enumerate() {
        let f = format!("{field}.queryParams[{k}]");
        if q.name.is_empty() {
            return Err(Invalid::new(format!("{f}.name"), "empty name"));
        }
        query_params.push(api::waypoint::QueryParamMatch {
            name: q.name.clone(),
            value: Some(value_match(q, &f)?),
        });
    }
    Ok((
        RouteMatch {
            path: Some(path),
            method,
            headers: headers(&m.headers, &format!("{field}.headers"))?,
            query_params,
            ..Default::default()
        },
        kind == "PathPrefix",
    ))
}

fn headers(
    list: &[HttpHeaderMatch],
    field: &str,
) -> Result<Vec<api::waypoint::HeaderMatch>, Invalid> {
    list.iter()
        .enumerate()
        .map(|(k, h)| {
            let f = format!("{field}[{k}]");
            let name = parts::header_name(&h.name, &format!("{f}.name"))?;
            Ok(parts::header_match(name, Some(value_match(h, &f)?), false))
        })
        .collect()
}

fn value_match(h: &HttpHeaderMatch, field: &str) -> Result<api::waypoint::StringMatch, Invalid> {
    match h.type_.as_deref().unwrap_or("Exact") {
        "Exact" => Ok(parts::exact(&h.value)),
        "RegularExpression" => parts::regex(&h.value, &format!("{field}.value")),
        other => Err(Invalid::new(
            format!("{field}.type"),
            format!("unknown match type {other:?} (Exact, RegularExpression)"),
        )),
    }
}

/// `/<service>/<method>` as a path match.
fn grpc_path(
    m: &crate::model::routes::GrpcMethodMatch,
    field: &str,
) -> Result<api::waypoint::PathMatch, Invalid> {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    if service.is_none() && method.is_none() {
        return Err(Invalid::new(field, "one of service and method is required"));
    }
    match m.type_.as_deref().unwrap_or("Exact") {
        "Exact" => {
            for (name, v) in [("service", service), ("method", method)] {
                if v.is_some_and(|v| v.contains('/')) {
                    return Err(Invalid::new(
                        format!("{field}.{name}"),
                        "may not contain \"/\"",
                    ));
                }
            }
            Ok(match (service, method) {
                (Some(s), Some(m)) => {
                    parts::path(path_match::Kind::Exact(format!("/{s}/{m}")), false)
                }
                (Some(s), None) => {
                    parts::path(path_match::Kind::SegmentPrefix(format!("/{s}")), false)
                }
                (None, Some(m)) => parts::path_regex(
                    &format!("/[^/]+/{}", regex::escape(m)),
                    &format!("{field}.method"),
                )?,
                (None, None) => unreachable!("checked above"),
            })
        }
        "RegularExpression" => {
            let part = |v: Option<&str>, name: &str| -> Result<String, Invalid> {
                match v {
                    Some(p) => {
                        values::regex(p).at(&format!("{field}.{name}"))?;
                        Ok(format!("(?:{p})"))
                    }
                    None => Ok("[^/]+".to_string()),
                }
            };
            let pattern = format!("/{}/{}", part(service, "service")?, part(method, "method")?);
            parts::path_regex(&pattern, field)
        }
        other => Err(Invalid::new(
            format!("{field}.type"),
            format!("unknown method match type {other:?} (Exact, RegularExpression)"),
        )),
    }
}

fn rank(obj: &Obj, m: &RouteMatch, rule: usize, index: usize) -> Rank {
    let (path_class, path_len) = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(path_match::Kind::Exact(p)) => (0, p.len()),
        Some(path_match::Kind::SegmentPrefix(p) | path_match::Kind::Prefix(p)) => (1, p.len()),
        Some(path_match::Kind::Regex(_)) => (2, 0),
        None => (1, 0),
    };
    Rank {
        path_class,
        path_len: Reverse(path_len),
        method: Reverse(m.method.is_some()),
        headers: Reverse(m.headers.len()),
        query: Reverse(m.query_params.len()),
        created: obj.created.clone(),
        namespace: obj.namespace.clone(),
        name: obj.name.clone(),
        rule,
        index,
    }
}

/// The weighted destinations of a rule; an empty list means "the parent
/// Service", as mesh routes without backends forward to their parent.
fn forward(
    obj: &Obj,
    catalog: &Catalog<'_>,
    refs: &[HttpBackendRef],
    field: &str,
) -> Result<Forward, Invalid> {
    let mut destinations = Vec::new();
    for (k, b) in refs.iter().enumerate() {
        let bf = format!("{field}.backendRefs[{k}]");
        let service = service_ref(obj, catalog, b.into(), &bf)?;
        let action = RuleAction::from_filters(
            obj,
            catalog,
            &b.filters,
            &format!("{bf}.filters"),
            false,
            false,
        )?;
        if !action.mirrors.is_empty() {
            return Err(Invalid::new(
                format!("{bf}.filters"),
                "only header modifiers are supported on a backend",
            ));
        }
        let weight = b.weight.unwrap_or(1);
        if weight > 0 {
            destinations.push(WeightedDestination {
                destination: Some(service.destination(u32::from(b.port.unwrap_or(0)), "")),
                weight,
                request_headers: action.request_headers,
                response_headers: action.response_headers,
            });
        }
    }
    if !refs.is_empty() && destinations.is_empty() {
        return Err(Invalid::new(
            format!("{field}.backendRefs"),
            "weights add up to 0: no backend would get traffic",
        ));
    }
    Ok(Forward {
        destinations,
        retry: Some(default_retry()),
        ..Default::default()
    })
}

fn timeouts(
    forward: &mut Forward,
    t: Option<&HttpRouteTimeouts>,
    field: &str,
) -> Result<(), Invalid> {
    let Some(t) = t else { return Ok(()) };
    if let Some(r) = &t.request {
        forward.timeout = values::optional_duration(r).at(&format!("{field}.timeouts.request"))?;
    }
    if let Some(b) = &t.backend_request {
        let bf = format!("{field}.timeouts.backendRequest");
        forward.attempt_timeout = values::optional_duration(b).at(&bf)?;
        if let (Some(total), Some(each)) = (&forward.timeout, &forward.attempt_timeout)
            && (each.seconds, each.nanos) > (total.seconds, total.nanos)
        {
            return Err(Invalid::new(bf, "must not be longer than timeouts.request"));
        }
    }
    Ok(())
}

/// GEP-1731 retries: connection failures and refused streams, plus the
/// listed status codes; asked for explicitly, so every method is retried.
fn retry(r: Option<&HttpRouteRetry>, field: &str) -> Result<Option<RetryPolicy>, Invalid> {
    let Some(r) = r else {
        return Ok(Some(default_retry()));
    };
    let attempts = r.attempts.unwrap_or(default_retry().attempts);
    if attempts == 0 {
        return Ok(None);
    }
    let mut retry_on = vec!["connect-failure".to_string(), "refused-stream".to_string()];
    for (i, c) in r.codes.iter().enumerate() {
        if !(400..=599).contains(c) {
            return Err(Invalid::new(
                format!("{field}.codes[{i}]"),
                format!("{c} is not a status code between 400 and 599"),
            ));
        }
    }
    if !r.codes.is_empty() {
        retry_on.push("retriable-status-codes".to_string());
    }
    Ok(Some(RetryPolicy {
        attempts,
        retry_on,
        retriable_status_codes: r.codes.iter().map(|c| u32::from(*c)).collect(),
        backoff: match &r.backoff {
            Some(b) => values::optional_duration(b).at(&format!("{field}.backoff"))?,
            None => None,
        },
        retry_non_idempotent: true,
    }))
}
