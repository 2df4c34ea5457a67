//! One request from arrival to the start of its response ([`Engine::handle`]): identification,
//! service lookup, authorization, rate limiting, route matching, faults and local answers.
//! Forwarding is in [`super::forward`]; the engine itself in [`super::compiled`], which this
//! module builds on rather than the other way round.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::authz::{AuthzSnapshot, HttpAttributes, Input};
use super::body::{self, Body};
use super::compiled::Engine;
use super::config::{Action, RouteEntry, ServiceEntry};
use super::context::{Handling, RequestContext};
use super::downstream::Watch;
use super::fault::Abort;
use super::forward;
use super::headers::{self, is_grpc, redirect_headers, strip_port};
use super::matching::RequestView;
use super::origin::{Caller, Target};
use super::reply::{self, RequestError};
use super::telemetry::labels::grpc_status;
use super::telemetry::{
    Authority, CountingBody, Finish, ObservedBody, RequestLabels, RequestMetrics, RequestRecord,
};
use super::trace::RequestTrace;
use super::upgrade::UpgradedBytes;
use super::upstream::UpstreamClient;

/// The original client: the first `x-forwarded-for` address, else the peer.
fn remote_ip(headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

impl Engine {
    /// Handles one request end to end and never fails: every error becomes a response
    /// (403 denied, 429 rate limited, 404 no route, 503 no healthy upstream or overflow,
    /// 504 timeout, injected faults; for the client's own faults 400 malformed body, 408
    /// body too slow, 499 client gone).
    pub async fn handle(
        self: &Arc<Self>,
        upstream: Arc<dyn UpstreamClient>,
        caller: Caller,
        target: Target,
        request: http::Request<Body>,
    ) -> http::Response<Body> {
        run(self, upstream, caller, target, request).await
    }
}

/// Runs the pipeline and wraps the response so that it is recorded when it ends.
async fn run(
    engine: &Arc<Engine>,
    upstream: Arc<dyn UpstreamClient>,
    caller: Caller,
    target: Target,
    request: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let request_bytes = Arc::new(AtomicU64::new(0));
    let downstream = Watch::default();
    let body = downstream
        .wrap(CountingBody::new(body, request_bytes.clone()).boxed())
        .boxed();
    let handling = Handling {
        engine,
        upstream: &upstream,
        caller: &caller,
        target: &target,
    };
    let grpc = is_grpc(&parts.headers);
    let record = arrival_record(handling, &mut parts, grpc);
    let mut unanswered = Unanswered {
        ctx: RequestContext {
            record,
            guards: Vec::new(),
            downstream,
        },
        metrics: engine.runtime.metrics.clone(),
        started,
        request_bytes: request_bytes.clone(),
        armed: true,
    };
    let result = process(handling, parts, body, grpc, &mut unanswered.ctx).await;
    let mut ctx = unanswered.answered();
    let mut response = respond(result, grpc, &mut ctx);
    let upgraded_response_bytes = upgraded(&mut response, &request_bytes);
    let finish = Finish {
        metrics: engine.runtime.metrics.clone(),
        record: ctx.record,
        started,
        request_bytes,
        guards: ctx.guards,
        downstream: ctx.downstream,
        upgraded_response_bytes,
    };
    let inner = std::mem::replace(response.body_mut(), body::empty());
    *response.body_mut() = ObservedBody::new(inner, finish).boxed();
    response
}

/// For a 101 (the upstream switched protocols): the counter of the bytes the transport will
/// relay back, and the handle it reports them with, in the response's extensions.
fn upgraded(
    response: &mut Response<Body>,
    request_bytes: &Arc<AtomicU64>,
) -> Option<Arc<AtomicU64>> {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return None;
    }
    let bytes = UpgradedBytes {
        request: request_bytes.clone(),
        response: Arc::default(),
    };
    let counter = bytes.response.clone();
    response.extensions_mut().insert(bytes);
    Some(counter)
}

/// The record of a request as it arrives: who sent it (labels built once per workload), what
/// it asks for, its `x-request-id` (which its headers get when they lack one) and the trace
/// context it carries.
fn arrival_record(h: Handling<'_>, parts: &mut Parts, grpc: bool) -> RequestRecord {
    let (request_id, incoming_trace, trace_id) = headers::identify(&mut parts.headers);
    let source = h
        .engine
        .runtime
        .peers
        .source(h.upstream, h.caller.ip, h.caller.identity.as_ref());
    RequestRecord {
        labels: RequestLabels {
            source,
            request_protocol: if grpc { "grpc" } else { "http" },
            ..Default::default()
        },
        method: parts.method.clone(),
        authority: Authority::of(parts),
        path: parts.uri.path_and_query().cloned(),
        source: Some(h.caller.ip),
        request_id,
        trace_id,
        incoming_trace,
        ..Default::default()
    }
}

/// Applies the service's telemetry settings to the request: its access log switch, its
/// metric overrides, and its trace (continued or started, sampled or not) when the service is traced.
fn observe(h: Handling<'_>, svc: &ServiceEntry, headers: &HeaderMap, ctx: &mut RequestContext) {
    let telemetry = &svc.telemetry;
    ctx.record.access_log_disabled = telemetry.access_log_disabled;
    ctx.record.labels.overrides = telemetry.metrics.clone();
    let Some(spec) = &telemetry.tracing else {
        return;
    };
    let resource = h.engine.config.trace_resource.clone();
    let incoming = &ctx.record.incoming_trace;
    let name = format!("{}:{}/*", svc.hostname, h.target.address.port());
    let mut trace = RequestTrace::start(incoming, spec.clone(), resource, name, headers);
    trace.node_id = h.engine.runtime.node_id().cloned();
    ctx.record.trace_id = headers::trace_id_of(Some(trace.context.trace_id));
    if trace.records() {
        h.engine.runtime.metrics.spans.start(h.upstream);
    }
    ctx.record.trace = Some(Box::new(trace));
}

/// The response to send: the pipeline's, or the waypoint's own answer to why there is none,
/// with its code, flags, details and gRPC status written into the request's record.
fn respond(
    result: Result<Response<Body>, RequestError>,
    grpc: bool,
    ctx: &mut RequestContext,
) -> Response<Body> {
    let (response, code) = match result {
        Ok(r) => {
            let code = r.status().as_u16();
            (r, code)
        }
        Err(e) => {
            tracing::debug!(error = %e, "answered locally");
            // The cause goes first, as in Envoy's flag order (UF before URX, UT before DI).
            let flags = std::mem::take(&mut ctx.record.labels.response_flags);
            ctx.flag(e.flag());
            ctx.flag(&flags);
            ctx.record.details = e.details();
            (e.response(grpc), e.recorded_status())
        }
    };
    let labels = &mut ctx.record.labels;
    labels.response_code = code;
    if let Some(s) = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        labels.grpc_response_status = grpc_status(s);
    }
    response
}

/// A request not answered yet. Dropped as such, the client went away while the waypoint
/// was working on it (the transport drops the request's future): it is recorded with flag
/// DC and response code 0, as Envoy records a request whose client left before any
/// response.
struct Unanswered {
    ctx: RequestContext,
    metrics: Arc<RequestMetrics>,
    started: Instant,
    request_bytes: Arc<AtomicU64>,
    /// Still to be recorded here.
    armed: bool,
}

impl Unanswered {
    /// The request's context, now that there is an answer to record it with.
    fn answered(&mut self) -> RequestContext {
        self.armed = false;
        std::mem::take(&mut self.ctx)
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ctx = &mut self.ctx;
        let flags = std::mem::take(&mut ctx.record.labels.response_flags);
        ctx.flag("DC");
        ctx.flag(&flags);
        ctx.record.labels.response_code = 0;
        ctx.record.details = "downstream_remote_disconnect";
        ctx.record.duration = self.started.elapsed();
        ctx.record.request_bytes = self.request_bytes.load(Ordering::Relaxed);
        self.metrics.finished(&ctx.record);
    }
}

/// The served service a target addresses.
fn service_for<'a>(
    engine: &'a Engine,
    upstream: &dyn UpstreamClient,
    target: &Target,
) -> Option<&'a Arc<ServiceEntry>> {
    let ip = target.address.ip();
    engine.config.by_vip.get(&ip).or_else(|| {
        let (_, hostname) = upstream.service_by_vip(ip)?;
        engine.config.by_host.get(&hostname)
    })
}

/// The pipeline up to forwarding: service lookup, authorization, rate limit, route match,
/// injected faults, then the route's own answer or forwarding.
async fn process(
    h: Handling<'_>,
    mut parts: Parts,
    body: Body,
    grpc: bool,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, RequestError> {
    let svc = service_for(h.engine, h.upstream.as_ref(), h.target)
        .ok_or(RequestError::UnknownService)?
        .clone();
    ctx.service(&svc.labels);
    ctx.record.route = Some(svc.default_route.clone());
    observe(h, &svc, &parts.headers, ctx);
    let authz = authorize(h, &svc, &parts, ctx)?;
    if let Some(limit) = svc.rate_limit
        && !h.engine.runtime.bucket(&svc.hostname, limit).try_take()
    {
        return Err(RequestError::RateLimited);
    }
    let (route, prefix) = route_for(h, &svc, &parts)?;
    ctx.record.route = Some(route.telemetry.clone());
    if let Some(abort) = inject_fault(route, grpc, ctx).await {
        return Ok(abort);
    }
    let mut answer = match &route.action {
        Action::Forward(spec) => {
            route.request_headers.apply(&mut parts.headers);
            let forwarding = forward::Forwarding {
                handling: h,
                route,
                spec,
                prefix,
                authz,
            };
            return forward::run(forwarding, parts, body, ctx).await;
        }
        Action::Redirect(r) => {
            let (status, location) = r.location(&parts, prefix);
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = status;
            *resp.headers_mut() = redirect_headers(&location);
            resp
        }
        Action::Direct(status, text) => {
            let mut resp = Response::new(if text.is_empty() {
                body::empty()
            } else {
                body::full(text.clone())
            });
            *resp.status_mut() = *status;
            resp
        }
    };
    ctx.record.details = "direct_response";
    route.response_headers.apply(answer.headers_mut());
    Ok(answer)
}

/// L7 authorization of the request as it arrived: denied (403) by the policies that apply
/// before the endpoint is known, or allowed. Routing edits the request afterwards, so when
/// workload-scoped policies exist, what they will judge is kept as it arrived.
fn authorize(
    h: Handling<'_>,
    svc: &ServiceEntry,
    parts: &Parts,
    ctx: &RequestContext,
) -> Result<Option<AuthzSnapshot>, RequestError> {
    // The source labels were built from the caller's identity (no identity, no principal):
    // no need to format it again.
    let principal = ctx.record.labels.source.policy_principal();
    let input = Input {
        principal,
        namespace: h.caller.identity.as_ref().map(|i| i.namespace()),
        source_ip: h.caller.ip,
        remote_ip: remote_ip(&parts.headers, h.caller.ip),
        destination_ip: h.target.address.ip(),
        destination_port: h.target.address.port(),
        http: Some(HttpAttributes {
            host: strip_port(headers::authority(parts)),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            headers: &parts.headers,
        }),
    };
    let policies = &h.engine.config.authz;
    let pending = policies
        .check_request(&input, &svc.hostname)
        .map_err(RequestError::Denied)?;
    // Workload rate limits also judge the request once the endpoint is chosen.
    let per_workload =
        policies.has_workload_scoped() || !h.engine.config.workload_limits.is_empty();
    Ok(per_workload.then(|| AuthzSnapshot::of(&input, pending)))
}

/// The first of the service's routes that takes the request (none: 404 NR), with the prefix
/// a prefix rewrite replaces.
fn route_for<'s>(
    h: Handling<'_>,
    svc: &'s ServiceEntry,
    parts: &Parts,
) -> Result<(&'s RouteEntry, &'s str), RequestError> {
    let view = RequestView {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        authority: headers::authority(parts),
        scheme: parts.uri.scheme_str().unwrap_or("http"),
        headers: &parts.headers,
        port: h.target.address.port(),
        source_namespace: h.caller.identity.as_ref().map(|i| i.namespace()),
    };
    svc.routes
        .iter()
        .find_map(|r| r.matches(&view).map(|p| (r, p)))
        .ok_or(RequestError::NoRoute)
}

/// The route's injected faults: a delay (flag DI), then possibly an abort, answered here
/// (flag FI) with the route's response edits.
async fn inject_fault(
    route: &RouteEntry,
    grpc: bool,
    ctx: &mut RequestContext,
) -> Option<Response<Body>> {
    let fault = route.fault.as_ref()?;
    if let Some(delay) = fault.roll_delay() {
        ctx.flag("DI");
        tokio::time::sleep(delay).await;
    }
    let abort = fault.roll_abort()?;
    ctx.flag("FI");
    ctx.record.details = "fault_filter_abort";
    let mut resp = abort_response(abort, grpc);
    route.response_headers.apply(resp.headers_mut());
    Some(resp)
}

/// The answer of an injected abort, worded as Envoy's fault filter words it.
fn abort_response(abort: Abort, grpc: bool) -> Response<Body> {
    if abort.grpc_status != 0 {
        return reply::grpc_local(abort.grpc_status, "fault filter abort", HeaderMap::new());
    }
    reply::local(
        abort.http_status,
        "fault filter abort",
        HeaderMap::new(),
        grpc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::authz::principal;
    use http::header::CONTENT_TYPE;

    #[test]
    fn remote_ip_prefers_forwarded_for() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(remote_ip(&h, peer), peer);
        h.insert("x-forwarded-for", "192.0.2.7, 10.0.0.9".parse().unwrap());
        assert_eq!(remote_ip(&h, peer), "192.0.2.7".parse::<IpAddr>().unwrap());
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(remote_ip(&h, peer), peer);
    }

    #[test]
    fn principals_drop_the_scheme() {
        let id: hbone::Identity = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
        assert_eq!(principal(&id), "cluster.local/ns/shop/sa/web");
        let mut g = HeaderMap::new();
        g.insert(CONTENT_TYPE, "application/grpc+proto".parse().unwrap());
        assert!(is_grpc(&g));
    }
}
