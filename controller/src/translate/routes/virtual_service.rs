//! Istio VirtualService (mesh hosts) → ordered routes.

use api::waypoint::{
    DirectResponse, Fault, FaultAbort, FaultDelay, Forward, HeaderModifier, Mirror, PathMatch,
    QueryParamMatch, Redirect, RegexRewrite, RetryPolicy, Route, RouteMatch, StringMatch,
    UrlRewrite, WeightedDestination, path_match, redirect, route, url_rewrite,
};

use super::super::service_key::ServiceKey;
use super::catalog::{At, Catalog, Invalid, Obj};
use super::parts::{self, default_retry};
use super::values;
use crate::model::Problem;
use crate::model::routes::{
    VirtualService, VsDestination, VsDirectResponse, VsFault, VsHeaderOperations, VsHeaders,
    VsHttpRoute, VsMatch, VsRedirect, VsRetries, VsRewrite, VsStringMatch,
};

/// What one VirtualService contributes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VsRoutes {
    /// The object.
    pub obj: Obj,
    /// Mesh services it configures (empty: gateway-only or no known host).
    pub hosts: Vec<ServiceKey>,
    /// Its routes, in order.
    pub routes: Vec<Route>,
}

/// Translates a VirtualService.
pub(crate) fn virtual_service(
    obj: &Obj,
    vs: &VirtualService,
    catalog: &Catalog<'_>,
    warnings: &mut Vec<Problem>,
) -> Result<VsRoutes, Invalid> {
    let mut out = VsRoutes {
        obj: obj.clone(),
        hosts: Vec::new(),
        routes: Vec::new(),
    };
    if !applies_to_mesh(&vs.spec.gateways) {
        return Ok(out);
    }
    for (i, host) in vs.spec.hosts.iter().enumerate() {
        match catalog.resolve_host(host, &obj.namespace) {
            Some(key) => {
                if !out.hosts.contains(&key) {
                    out.hosts.push(key);
                }
            }
            None => warnings.push(obj.problem(
                format!("spec.hosts[{i}]"),
                format!("warning: {host:?} names no Service of the mesh; host ignored"),
            )),
        }
    }
    if !vs.spec.tcp.is_empty() || !vs.spec.tls.is_empty() {
        warnings.push(obj.problem(
            "spec.tcp",
            "warning: TCP and TLS routes are not translated; such traffic goes to the host itself",
        ));
    }
    for (i, h) in vs.spec.http.iter().enumerate() {
        if let Some(route) = http_route(obj, catalog, h, &format!("spec.http[{i}]"), i, warnings)? {
            out.routes.push(route);
        }
    }
    Ok(out)
}

/// `gateways` empty or naming `mesh`.
fn applies_to_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

fn http_route(
    obj: &Obj,
    catalog: &Catalog<'_>,
    h: &VsHttpRoute,
    field: &str,
    index: usize,
    warnings: &mut Vec<Problem>,
) -> Result<Option<Route>, Invalid> {
    if h.delegate.is_some() {
        return Err(Invalid::new(
            format!("{field}.delegate"),
            "delegation is not supported",
        ));
    }
    if h.cors_policy.is_some() {
        warnings.push(obj.problem(
            format!("{field}.corsPolicy"),
            "warning: CORS is not implemented: the policy has no effect; answer preflight \
             requests in the application",
        ));
    }
    let mut matches = Vec::new();
    let mut prefix_only = true;
    for (j, m) in h.matches.iter().enumerate() {
        let f = format!("{field}.match[{j}]");
        if !applies_to_mesh(&m.gateways) {
            continue;
        }
        if m.uri.as_ref().is_some_and(|u| u.prefix.is_none()) {
            prefix_only = false;
        }
        matches.push(route_match(m, &f)?);
    }
    if !h.matches.is_empty() && matches.is_empty() {
        // Every match is for gateways only.
        return Ok(None);
    }
    let chosen = [
        h.redirect.is_some(),
        h.direct_response.is_some(),
        !h.route.is_empty(),
    ];
    if chosen.iter().filter(|c| **c).count() != 1 {
        return Err(Invalid::new(
            field,
            "exactly one of route, redirect and directResponse is required",
        ));
    }
    let action = if let Some(r) = &h.redirect {
        vs_redirect(r, &format!("{field}.redirect"))?
    } else if let Some(d) = &h.direct_response {
        direct_response(d, &format!("{field}.directResponse"))?
    } else {
        route::Action::Forward(forward(obj, catalog, h, field, prefix_only)?)
    };
    let (request_headers, response_headers) =
        headers(h.headers.as_ref(), &format!("{field}.headers"))?;
    let fault = match &h.fault {
        Some(f) => fault(f, &format!("{field}.fault"), obj, warnings)?,
        None => None,
    };
    let name = h.name.clone().unwrap_or_else(|| format!("http-{index}"));
    Ok(Some(Route {
        name: format!("{}/{}/{name}", obj.namespace, obj.name),
        source: Some(obj.source()),
        matches,
        action: Some(action),
        request_headers,
        response_headers,
        fault,
        rule_name: name,
    }))
}

/// A route's `redirect` (at `rf`).
fn vs_redirect(r: &VsRedirect, rf: &str) -> Result<route::Action, Invalid> {
    let status = r.redirect_code.unwrap_or(301);
    if ![301, 302, 303, 307, 308].contains(&status) {
        return Err(Invalid::new(
            format!("{rf}.redirectCode"),
            format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
        ));
    }
    if let Some(d) = r.derive_port.as_deref()
        && !matches!(d, "FROM_PROTOCOL_DEFAULT" | "FROM_REQUEST_PORT")
    {
        return Err(Invalid::new(
            format!("{rf}.derivePort"),
            format!("unknown value {d:?} (FROM_PROTOCOL_DEFAULT, FROM_REQUEST_PORT)"),
        ));
    }
    let path = match &r.uri {
        Some(u) => Some(redirect::Path::FullPath(parts::absolute(
            u,
            &format!("{rf}.uri"),
        )?)),
        None => None,
    };
    Ok(route::Action::Redirect(Redirect {
        scheme: r.scheme.clone().unwrap_or_default(),
        host: r.authority.clone().unwrap_or_default(),
        port: r.port.unwrap_or(0),
        path,
        status,
    }))
}

/// A route's `directResponse` (at `df`).
fn direct_response(d: &VsDirectResponse, df: &str) -> Result<route::Action, Invalid> {
    if !(200..=599).contains(&d.status) {
        return Err(Invalid::new(
            format!("{df}.status"),
            format!("{} is not an HTTP status", d.status),
        ));
    }
    let body = match &d.body {
        Some(b) if b.bytes.is_some() => {
            return Err(Invalid::new(
                format!("{df}.body.bytes"),
                "binary bodies are not supported; use body.string",
            ));
        }
        Some(b) => b.string.clone().unwrap_or_default().into_bytes(),
        None => Vec::new(),
    };
    Ok(route::Action::DirectResponse(DirectResponse {
        status: d.status,
        body,
    }))
}

fn route_match(m: &VsMatch, field: &str) -> Result<RouteMatch, Invalid> {
    if !m.source_labels.is_empty() {
        return Err(Invalid::new(
            format!("{field}.sourceLabels"),
            "source labels cannot be matched at a waypoint; use sourceNamespace or an AuthorizationPolicy",
        ));
    }
    let mut out = RouteMatch::default();
    if let Some(u) = &m.uri {
        out.path = Some(path(u, m.ignore_uri_case, &format!("{field}.uri"))?);
    }
    if let Some(v) = &m.method {
        out.method = Some(string(v, &format!("{field}.method"))?);
    }
    for (pseudo, v, name) in [
        (":scheme", &m.scheme, "scheme"),
        (":authority", &m.authority, "authority"),
    ] {
        if let Some(v) = v {
            let value = string(v, &format!("{field}.{name}"))?;
            out.headers
                .push(parts::header_match(pseudo.to_string(), Some(value), false));
        }
    }
    for (headers, invert, what) in [
        (&m.headers, false, "headers"),
        (&m.without_headers, true, "withoutHeaders"),
    ] {
        for (name, v) in headers {
            let f = format!("{field}.{what}[{name}]");
            let name = parts::header_name(name, &f)?;
            let value = if is_empty(v) {
                None
            } else {
                Some(string(v, &f)?)
            };
            out.headers.push(parts::header_match(name, value, invert));
        }
    }
    for (name, v) in &m.query_params {
        let f = format!("{field}.queryParams[{name}]");
        if v.prefix.is_some() {
            return Err(Invalid::new(
                f,
                "prefix matching of query parameters is not supported (exact, regex)",
            ));
        }
        out.query_params.push(QueryParamMatch {
            name: name.clone(),
            value: if is_empty(v) {
                None
            } else {
                Some(string(v, &f)?)
            },
        });
    }
    if let Some(p) = m.port {
        out.port =
            u32::from(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                Invalid::new(format!("{field}.port"), format!("{p} is not a port"))
            })?);
    }
    out.source_namespace = m.source_namespace.clone().unwrap_or_default();
    Ok(out)
}

fn is_empty(v: &VsStringMatch) -> bool {
    v.exact.is_none() && v.prefix.is_none() && v.regex.is_none()
}

fn string(v: &VsStringMatch, field: &str) -> Result<StringMatch, Invalid> {
    match (&v.exact, &v.prefix, &v.regex) {
        (Some(e), None, None) => Ok(parts::exact(e)),
        (None, Some(p), None) => Ok(parts::prefix(p)),
        (None, None, Some(r)) => parts::regex(r, &format!("{field}.regex")),
        _ => Err(Invalid::new(
            field,
            "exactly one of exact, prefix and regex is required",
        )),
    }
}

fn path(v: &VsStringMatch, ignore_case: bool, field: &str) -> Result<PathMatch, Invalid> {
    let kind = match (&v.exact, &v.prefix, &v.regex) {
        (Some(e), None, None) => path_match::Kind::Exact(e.clone()),
        (None, Some(p), None) => path_match::Kind::Prefix(p.clone()),
        (None, None, Some(r)) => {
            path_match::Kind::Regex(values::regex(r).at(&format!("{field}.regex"))?)
        }
        _ => {
            return Err(Invalid::new(
                field,
                "exactly one of exact, prefix and regex is required",
            ));
        }
    };
    Ok(parts::path(kind, ignore_case))
}

fn destination(
    obj: &Obj,
    catalog: &Catalog<'_>,
    d: &VsDestination,
    field: &str,
) -> Result<api::waypoint::Destination, Invalid> {
    let key = catalog.require_host(&d.host, &obj.namespace, format!("{field}.host"))?;
    let port =
        match &d.port {
            Some(p) => u32::from(u16::try_from(p.number).ok().filter(|p| *p > 0).ok_or_else(
                || {
                    Invalid::new(
                        format!("{field}.port.number"),
                        format!("{} is not a port", p.number),
                    )
                },
            )?),
            None => 0,
        };
    Ok(key.destination(port, d.subset.as_deref().unwrap_or("")))
}

fn forward(
    obj: &Obj,
    catalog: &Catalog<'_>,
    h: &VsHttpRoute,
    field: &str,
    prefix_only: bool,
) -> Result<Forward, Invalid> {
    let single = h.route.len() == 1;
    let mut destinations = Vec::new();
    for (k, r) in h.route.iter().enumerate() {
        let rf = format!("{field}.route[{k}]");
        let weight = match r.weight {
            None if single => 100,
            None => 0,
            Some(w) => u32::try_from(w).map_err(|_| {
                Invalid::new(
                    format!("{rf}.weight"),
                    format!("{w} is not a weight between 0 and 100"),
                )
            })?,
        };
        let (request_headers, response_headers) =
            headers(r.headers.as_ref(), &format!("{rf}.headers"))?;
        let dest = destination(obj, catalog, &r.destination, &format!("{rf}.destination"))?;
        if weight > 0 {
            destinations.push(WeightedDestination {
                destination: Some(dest),
                weight,
                request_headers,
                response_headers,
            });
        }
    }
    if destinations.is_empty() {
        return Err(Invalid::new(
            format!("{field}.route"),
            "weights add up to 0: no destination would get traffic",
        ));
    }
    let mirrors = mirrors(obj, catalog, h, field)?;
    let rewrite = match &h.rewrite {
        Some(r) => Some(rewrite(r, &format!("{field}.rewrite"), prefix_only)?),
        None => None,
    };
    let (timeout, attempt_timeout, retry) =
        retries(h.timeout.as_deref(), h.retries.as_ref(), field)?;
    Ok(Forward {
        destinations,
        rewrite,
        mirrors,
        timeout,
        attempt_timeout,
        retry,
    })
}

/// A route's `mirror` (with `mirrorPercentage` / `mirrorPercent`) and `mirrors`.
fn mirrors(
    obj: &Obj,
    catalog: &Catalog<'_>,
    h: &VsHttpRoute,
    field: &str,
) -> Result<Vec<Mirror>, Invalid> {
    let mut mirrors = Vec::new();
    if let Some(m) = &h.mirror {
        let percentage = match (&h.mirror_percentage, h.mirror_percent) {
            (Some(p), _) => {
                values::percentage(p.value).at(&format!("{field}.mirrorPercentage.value"))?
            }
            (None, Some(p)) => {
                values::percentage(f64::from(p)).at(&format!("{field}.mirrorPercent"))?
            }
            (None, None) => 100.0,
        };
        mirrors.push(Mirror {
            destination: Some(destination(obj, catalog, m, &format!("{field}.mirror"))?),
            percentage,
        });
    }
    for (k, m) in h.mirrors.iter().enumerate() {
        let mf = format!("{field}.mirrors[{k}]");
        let target = destination(obj, catalog, &m.destination, &format!("{mf}.destination"))?;
        mirrors.push(Mirror {
            destination: Some(target),
            percentage: match &m.percentage {
                Some(p) => values::percentage(p.value).at(&format!("{mf}.percentage.value"))?,
                None => 100.0,
            },
        });
    }
    Ok(mirrors)
}

/// A route's `rewrite` (at `rf`); after prefix matches only, `uri` swaps the matched prefix.
fn rewrite(r: &VsRewrite, rf: &str, prefix_only: bool) -> Result<UrlRewrite, Invalid> {
    let path = match (&r.uri, &r.uri_regex_rewrite) {
        (Some(_), Some(_)) => {
            return Err(Invalid::new(rf, "uri and uriRegexRewrite are exclusive"));
        }
        // Istio swaps the matched prefix (or the whole path after an exact or regex match).
        (Some(u), None) if prefix_only => Some(url_rewrite::Path::Prefix(u.clone())),
        (Some(u), None) => Some(url_rewrite::Path::FullPath(u.clone())),
        (None, Some(x)) => Some(url_rewrite::Path::Regex(RegexRewrite {
            pattern: values::regex(&x.match_).at(&format!("{rf}.uriRegexRewrite.match"))?,
            substitution: x.rewrite.clone(),
        })),
        (None, None) => None,
    };
    Ok(UrlRewrite {
        path,
        host: r.authority.clone().unwrap_or_default(),
    })
}

type Timing = (
    Option<api::prost_types::Duration>,
    Option<api::prost_types::Duration>,
    Option<RetryPolicy>,
);

/// Istio's retry conversion: no `retries` means the default policy,
/// `attempts: 0` none; written retries apply to every method.
fn retries(timeout: Option<&str>, r: Option<&VsRetries>, field: &str) -> Result<Timing, Invalid> {
    let timeout = match timeout {
        Some(t) => values::optional_duration(t).at(&format!("{field}.timeout"))?,
        None => None,
    };
    let Some(r) = r else {
        return Ok((timeout, None, Some(default_retry())));
    };
    let rf = format!("{field}.retries");
    let attempt_timeout = match &r.per_try_timeout {
        Some(t) => values::optional_duration(t).at(&format!("{rf}.perTryTimeout"))?,
        None => None,
    };
    let attempts = r.attempts.unwrap_or(0);
    let attempts = u32::try_from(attempts).map_err(|_| {
        Invalid::new(
            format!("{rf}.attempts"),
            format!("{attempts} is negative or too large"),
        )
    })?;
    if attempts == 0 {
        return Ok((timeout, attempt_timeout, None));
    }
    let mut retry = default_retry();
    retry.attempts = attempts;
    retry.retry_non_idempotent = true;
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let (conditions, codes) = parts::retry_on(on, &format!("{rf}.retryOn"))?;
        retry.retry_on = conditions;
        retry.retriable_status_codes = codes;
    }
    if let Some(b) = &r.backoff {
        retry.backoff = values::optional_duration(b).at(&format!("{rf}.backoff"))?;
    }
    Ok((timeout, attempt_timeout, Some(retry)))
}

fn headers(
    h: Option<&VsHeaders>,
    field: &str,
) -> Result<(Option<HeaderModifier>, Option<HeaderModifier>), Invalid> {
    let Some(h) = h else { return Ok((None, None)) };
    let convert = |ops: Option<&VsHeaderOperations>, what: &str| match ops {
        Some(o) => parts::header_modifier(
            o.set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            o.add.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            o.remove.iter().map(String::as_str),
            &format!("{field}.{what}"),
        ),
        None => Ok(None),
    };
    Ok((
        convert(h.request.as_ref(), "request")?,
        convert(h.response.as_ref(), "response")?,
    ))
}

fn fault(
    f: &VsFault,
    field: &str,
    obj: &Obj,
    warnings: &mut Vec<Problem>,
) -> Result<Option<Fault>, Invalid> {
    let mut out = Fault::default();
    if let Some(d) = &f.delay {
        let df = format!("{field}.delay");
        if d.exponential_delay.is_some() {
            return Err(Invalid::new(
                format!("{df}.exponentialDelay"),
                "exponential delays are not supported; use fixedDelay",
            ));
        }
        let fixed = d
            .fixed_delay
            .as_deref()
            .ok_or_else(|| Invalid::new(format!("{df}.fixedDelay"), "missing"))?;
        let percentage = fault_percentage(
            d.percentage.as_ref().map(|p| p.value),
            d.percent,
            &df,
            "delayed",
            obj,
            warnings,
        )?;
        out.delay = Some(FaultDelay {
            fixed_delay: Some(values::positive_duration(fixed).at(&format!("{df}.fixedDelay"))?),
            percentage,
        });
    }
    if let Some(a) = &f.abort {
        let af = format!("{field}.abort");
        if a.http2_error.is_some() {
            return Err(Invalid::new(
                format!("{af}.http2Error"),
                "HTTP/2 error aborts are not supported; use httpStatus or grpcStatus",
            ));
        }
        let (http_status, grpc_status) = match (a.http_status, &a.grpc_status) {
            (Some(s), None) if (200..=599).contains(&s) => (s, 0),
            (Some(s), None) => {
                return Err(Invalid::new(
                    format!("{af}.httpStatus"),
                    format!("{s} is not an HTTP status"),
                ));
            }
            (None, Some(g)) => (0, values::grpc_status(g).at(&format!("{af}.grpcStatus"))?),
            _ => {
                return Err(Invalid::new(
                    af,
                    "exactly one of httpStatus and grpcStatus is required",
                ));
            }
        };
        let percentage = fault_percentage(
            a.percentage.as_ref().map(|p| p.value),
            None,
            &af,
            "aborted",
            obj,
            warnings,
        )?;
        out.abort = Some(FaultAbort {
            http_status,
            grpc_status,
            percentage,
        });
    }
    Ok((out.delay.is_some() || out.abort.is_some()).then_some(out))
}

/// Istio injects a fault into no request when no percentage is given.
fn fault_percentage(
    value: Option<f64>,
    legacy: Option<u32>,
    field: &str,
    what: &str,
    obj: &Obj,
    warnings: &mut Vec<Problem>,
) -> Result<f64, Invalid> {
    match (value, legacy) {
        (Some(v), _) => values::percentage(v).at(&format!("{field}.percentage.value")),
        (None, Some(p)) => values::percentage(f64::from(p)).at(&format!("{field}.percent")),
        (None, None) => {
            warnings.push(obj.problem(
                format!("{field}.percentage"),
                format!("warning: no percentage given, so no request is {what} (as in Istio)"),
            ));
            Ok(0.0)
        }
    }
}
