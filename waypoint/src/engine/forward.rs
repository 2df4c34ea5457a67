//! Forwarding a routed request: destination choice, mirrors, and the attempt loop (endpoint
//! choice, workload-scoped authorization, pool admission, per-try timeout, classification,
//! retry) under the route's timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Body as _;

use super::authz::AuthzSnapshot;
use super::balance::{Candidate, InFlight};
use super::body::{self, Body, Replay};
use super::config::{DestSpec, ForwardSpec, RouteEntry};
use super::context::{Handling, RequestContext};
use super::downstream::{Fault, Watch};
use super::fault::roll;
use super::mirror::{self, MirrorBody};
use super::outlier::{Health, OutlierSpec};
use super::pool::{Admission, PoolState, RetryToken};
use super::reply::RequestError;
use super::retry::{Budget, Outcome};
use super::runtime::UpstreamState;
use super::trace::cluster_name;
use super::upgrade::upgrade_protocol;
use super::upstream::{UpstreamError, UpstreamHints};
use super::xfcc;
use super::{endpoints, select};

/// The parts of a request every attempt repeats.
#[derive(Clone)]
pub(crate) struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    fn of(parts: http::request::Parts) -> Self {
        Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        }
    }

    /// The parts, for edits (mirrors rewrite the authority).
    pub(crate) fn to_parts(&self) -> http::request::Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.uri = self.uri.clone();
        parts.version = self.version;
        parts.headers = self.headers.clone();
        parts
    }

    /// A request with `body`; the last attempt takes the headers instead of copying them.
    pub(crate) fn request(
        &mut self,
        body: Body,
        last: bool,
        hints: Option<UpstreamHints>,
    ) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = if last {
            std::mem::take(&mut self.headers)
        } else {
            self.headers.clone()
        };
        if let Some(h) = hints {
            req.extensions_mut().insert(h);
        }
        req
    }
}

/// Where the body of each attempt comes from.
enum Source {
    /// No body.
    Empty,
    /// A body that can be sent once.
    Once(Option<Body>),
    /// A recorded body.
    Replay(Replay),
}

impl Source {
    fn next(&mut self) -> Option<Body> {
        match self {
            Source::Empty => Some(body::empty()),
            Source::Once(b) => b.take(),
            Source::Replay(r) => Some(r.attempt()),
        }
    }

    fn replayable(&self) -> bool {
        match self {
            Source::Empty => true,
            Source::Once(b) => b.is_some(),
            Source::Replay(r) => r.replayable(),
        }
    }

    fn mirror_body(&self) -> MirrorBody {
        match self {
            Source::Replay(r) => MirrorBody::Wait(Box::pin(r.completion())),
            _ => MirrorBody::Empty,
        }
    }
}

/// Everything forwarding looks at.
pub(crate) struct Forwarding<'a> {
    /// The engine, the transport and the request's origin.
    pub handling: Handling<'a>,
    /// The matched route.
    pub route: &'a RouteEntry,
    /// Its forwarding action.
    pub spec: &'a ForwardSpec,
    /// What a prefix rewrite replaces.
    pub prefix: &'a str,
    /// Workload-scoped authorization still to do.
    pub authz: Option<AuthzSnapshot>,
}

/// Forwards the request (the route's request edits are already applied).
pub(crate) async fn run(
    f: Forwarding<'_>,
    mut parts: http::request::Parts,
    request_body: Body,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, RequestError> {
    let spec = f.spec;
    let chosen = select::weighted(&spec.destinations, spec.total_weight);
    chosen.request_headers.apply(&mut parts.headers);
    // After every header edit of the route and destination, so that no configuration can
    // forge it either; retries and mirrors repeat these headers. Without the opt-in the
    // inbound values are removed all the same (Envoy's default, SANITIZE): an app never sees
    // one the mesh did not write.
    let h = f.handling;
    let caller = h
        .caller
        .identity
        .as_ref()
        .filter(|_| h.engine.config.xfcc_include_client_identity);
    xfcc::set_client_identity(&mut parts.headers, h.engine.runtime.own_identity(), caller);
    if let Some(rewrite) = &spec.rewrite {
        rewrite.apply(&mut parts, f.prefix);
    }
    let dest = &chosen.dest;
    ctx.service(&dest.labels);

    // A copy of an upgrade would open a second upgraded connection nobody reads: upgrades
    // are not mirrored.
    // Checked only on routes that mirror: most requests skip the header lookups.
    let mirrors: Vec<_> = if spec.mirrors.is_empty() || upgrade_protocol(&parts.headers).is_some() {
        Vec::new()
    } else {
        spec.mirrors.iter().filter(|m| roll(m.percentage)).collect()
    };
    let mut source = if request_body.is_end_stream() {
        Source::Empty
    } else if spec.retry.is_some() || !mirrors.is_empty() {
        Source::Replay(Replay::new(request_body))
    } else {
        Source::Once(Some(request_body))
    };
    let template = Template::of(parts);
    let Handling {
        engine,
        upstream,
        caller,
        target,
    } = f.handling;
    for m in mirrors {
        let port = if m.dest.port != 0 {
            m.dest.port
        } else {
            target.address.port()
        };
        mirror::spawn(mirror::MirrorRequest {
            engine: engine.clone(),
            upstream: upstream.clone(),
            caller: caller.clone(),
            dest: m.dest.clone(),
            port,
            parts: template.to_parts(),
            body: source.mirror_body(),
            deadline: spec.timeout,
            trace: ctx.record.trace.as_deref().map(|t| t.mirror()),
        });
    }

    let (limit, expired) = route_deadline(spec.timeout, &template.headers);
    let attempts = attempts(&f, dest, template, &mut source, ctx);
    let mut response = match limit {
        Some(limit) => match tokio::time::timeout(limit, attempts).await {
            Ok(r) => r?,
            // Still waiting for the client's body, the time ran out on the client.
            Err(_) => {
                return Err(ctx
                    .downstream
                    .timeout_fault()
                    .map_or(expired, RequestError::Downstream));
            }
        },
        None => attempts.await?,
    };
    chosen.response_headers.apply(response.headers_mut());
    f.route.response_headers.apply(response.headers_mut());
    Ok(response)
}

/// The time the upstream has to answer, and the error when it runs out: the route's
/// timeout, or a gRPC caller's `grpc-timeout` when that is shorter (Envoy's route timeout
/// from the header, as Istio configures it). The deadline bounds the wait for the response
/// headers, as the route timeout does; a stream that has begun is the app's to end.
fn route_deadline(
    route: Option<Duration>,
    headers: &HeaderMap,
) -> (Option<Duration>, RequestError) {
    let caller = headers
        .get(api::grpc_timeout::GRPC_TIMEOUT)
        .filter(|_| super::headers::is_grpc(headers))
        .and_then(|v| v.to_str().ok())
        .and_then(api::grpc_timeout::parse);
    match (route, caller) {
        (Some(r), Some(c)) if c < r => (Some(c), RequestError::DeadlineExceeded),
        (None, Some(c)) => (Some(c), RequestError::DeadlineExceeded),
        (r, _) => (r, RequestError::Timeout),
    }
}

/// How one attempt ended.
fn classify(result: &Result<Response<Body>, AttemptError>) -> (Outcome, Health) {
    match result {
        Ok(resp) => {
            let grpc = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            (
                Outcome::Response(resp.status(), grpc),
                Health::of_status(resp.status().as_u16()),
            )
        }
        Err(AttemptError::Upstream(UpstreamError::Connect(_))) => {
            (Outcome::ConnectFailure, Health::GatewayError)
        }
        Err(AttemptError::Upstream(UpstreamError::Request(_))) => {
            (Outcome::Reset, Health::GatewayError)
        }
        Err(AttemptError::Timeout) => (Outcome::Timeout, Health::GatewayError),
    }
}

enum AttemptError {
    Upstream(UpstreamError),
    Timeout,
}

/// Whether an attempt ended by the client's doing rather than the endpoint's: the request
/// body failed (whatever the endpoint then did), or the per-try time ran out while the
/// waypoint was waiting for the client's bytes.
fn downstream_fault(result: &Result<Response<Body>, AttemptError>, watch: &Watch) -> Option<Fault> {
    match result {
        Err(AttemptError::Timeout) => watch.timeout_fault(),
        _ => watch.fault(),
    }
}

impl From<AttemptError> for RequestError {
    fn from(e: AttemptError) -> Self {
        match e {
            AttemptError::Upstream(UpstreamError::Connect(m)) => RequestError::ConnectFailure(m),
            AttemptError::Upstream(UpstreamError::Request(m)) => RequestError::Reset(m),
            AttemptError::Timeout => RequestError::PerTryTimeout,
        }
    }
}

/// What the attempts of a request to one destination work with: its port, its policy
/// resolved (service or subset) and the runtime state it counts in.
struct AttemptPlan<'a> {
    port: u16,
    resolved: select::Resolved<'a>,
    state: Arc<UpstreamState>,
    budget: Option<Arc<Budget>>,
    pool: Option<Arc<PoolState>>,
    hints: Option<UpstreamHints>,
}

impl AttemptPlan<'_> {
    /// The destination's outlier detection, if any.
    fn outlier(&self) -> Option<&OutlierSpec> {
        self.resolved.policy.outlier.as_ref()
    }
}

/// Resolves `dest`'s policy and state; the request is counted in the retry budget here.
fn plan<'a>(f: &Forwarding<'a>, dest: &'a DestSpec) -> Result<AttemptPlan<'a>, RequestError> {
    let engine = f.handling.engine;
    let port = if dest.port != 0 {
        dest.port
    } else {
        f.handling.target.address.port()
    };
    let policy = engine
        .config
        .destinations
        .get(&dest.hostname)
        .map(Arc::as_ref);
    let resolved = select::resolve(dest, policy)
        .ok_or_else(|| RequestError::NoCluster(dest.subset.clone().unwrap_or_default()))?;
    let state = engine.runtime.upstream(&dest.hostname);
    let budget = policy.and_then(|p| p.budget).map(|b| state.budget(b));
    if let Some(b) = &budget {
        b.record_request();
    }
    let pool = resolved
        .policy
        .pool
        .map(|p| state.pool(resolved.pool_key, p));
    let hints = resolved
        .policy
        .pool
        .filter(|p| p.max_requests_per_connection > 0 || p.connect_timeout.is_some())
        .map(|p| UpstreamHints {
            max_requests_per_connection: p.max_requests_per_connection,
            connect_timeout: p.connect_timeout,
        });
    Ok(AttemptPlan {
        port,
        resolved,
        state,
        budget,
        pool,
        hints,
    })
}

/// One attempt sent: how it ended, and what it holds until the response ends or the next
/// attempt starts.
struct Attempt {
    /// Its pool admission, when the destination has connection-pool limits.
    admission: Option<Admission>,
    /// The endpoint's count of requests in flight (least-request balancing).
    in_flight: InFlight,
    /// The response, or why there is none.
    result: Result<Response<Body>, AttemptError>,
}

/// What to do after an attempt that did not end by the client's doing.
enum Verdict {
    /// Answer with this attempt: the retry policy does not cover how it ended.
    Final,
    /// Answer with this attempt, flagged URX: the policy would retry, but the attempts are
    /// used up, the body can no longer be replayed, or the pool's or the budget's retry limit
    /// is reached.
    Exhausted,
    /// Try again, holding the pool's retry token when the pool counts retries.
    Retry(Option<RetryToken>),
}

/// The attempts of one request at one destination: what they share, and what the loop keeps
/// from one to the next.
struct Attempts<'f> {
    f: &'f Forwarding<'f>,
    dest: &'f DestSpec,
    plan: AttemptPlan<'f>,
    /// The request every attempt repeats.
    template: Template,
    /// Where each attempt's body comes from.
    source: &'f mut Source,
    /// The first attempt and the retries the policy allows.
    max_attempts: u32,
    /// Endpoints already tried, avoided while another is left.
    tried: Vec<SocketAddr>,
}

impl Attempts<'_> {
    /// Chooses the next attempt's endpoint (subset, ejections, tried endpoints, balancer)
    /// and applies the policies scoped to its workload.
    fn choose(&self) -> Result<Candidate, RequestError> {
        let Handling {
            engine, upstream, ..
        } = self.f.handling;
        let plan = &self.plan;
        let candidates =
            self.dest
                .endpoints
                .candidates(upstream, &plan.state, plan.port, plan.resolved.uids);
        let endpoint = endpoints::choose(
            &plan.state,
            plan.resolved.policy.lb,
            &candidates,
            plan.outlier(),
            &self.tried,
        )
        .ok_or(RequestError::NoHealthyUpstream)?;
        if let Some(snapshot) = &self.f.authz {
            engine
                .config
                .authz
                .check_endpoint(&snapshot.input(), snapshot.pending, &endpoint.info.uid)
                .map_err(RequestError::Denied)?;
            let input = snapshot.input();
            let admitted = engine.config.workload_limits.admit(
                &engine.runtime.limit_buckets,
                &endpoint.info.uid,
                input.destination_port,
                input.principal,
            );
            if !admitted {
                return Err(RequestError::RateLimited);
            }
        }
        Ok(endpoint)
    }

    /// Sends attempt number `attempt` to `endpoint` once the pool admits it, under the
    /// per-try timeout.
    async fn send(
        &mut self,
        endpoint: &Candidate,
        attempt: u32,
        ctx: &mut RequestContext,
    ) -> Result<Attempt, RequestError> {
        let Handling {
            engine,
            upstream,
            caller,
            ..
        } = self.f.handling;
        let admission = match &self.plan.pool {
            Some(p) => Some(p.admit().await.map_err(|_| RequestError::Overflow)?),
            None => None,
        };
        let in_flight = endpoint.state.start();
        ctx.record.upstream = Some(endpoint.info.address);
        ctx.destination(
            engine
                .runtime
                .peers
                .destination(upstream, endpoint.info.address.ip()),
        );
        let body = self
            .source
            .next()
            .ok_or_else(|| RequestError::Reset("request body already sent".into()))?;
        let last = attempt >= self.max_attempts;
        let mut request = self.template.request(body, last, self.plan.hints);
        if let Some(trace) = ctx.record.trace.as_mut() {
            let (port, dest) = (self.plan.port, self.dest);
            let cluster = || cluster_name(port, dest.subset.as_deref(), &dest.hostname);
            trace.attempt(request.headers_mut(), cluster, endpoint.info.address);
        }
        let sent = upstream.send(&endpoint.info, caller, request);
        let result = match self.f.spec.attempt_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r.map_err(AttemptError::Upstream),
                Err(_) => Err(AttemptError::Timeout),
            },
            None => sent.await.map_err(AttemptError::Upstream),
        };
        Ok(Attempt {
            admission,
            in_flight,
            result,
        })
    }

    /// Whether attempt number `attempt`, which ended with `outcome`, is retried.
    fn verdict(&self, attempt: u32, outcome: Outcome) -> Verdict {
        let retriable = self
            .f
            .spec
            .retry
            .as_ref()
            .is_some_and(|r| r.should_retry(outcome, &self.template.method));
        if !retriable {
            return Verdict::Final;
        }
        let more = attempt < self.max_attempts && self.source.replayable();
        // Pool retry limit first: a refused retry must not spend the budget.
        let token = more
            .then(|| match &self.plan.pool {
                Some(p) => p.try_retry().map(Some),
                None => Some(None),
            })
            .flatten();
        let allowed = token.is_some() && self.plan.budget.as_ref().is_none_or(|b| b.try_retry());
        match token {
            Some(token) if allowed => Verdict::Retry(token),
            _ => Verdict::Exhausted,
        }
    }
}

/// The attempt loop: endpoint choice, workload-scoped authorization, pool admission, the
/// exchange under the per-try timeout, then the verdict on the endpoint and on a retry.
async fn attempts(
    f: &Forwarding<'_>,
    dest: &DestSpec,
    template: Template,
    source: &mut Source,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, RequestError> {
    let mut attempts = Attempts {
        f,
        dest,
        plan: plan(f, dest)?,
        template,
        source,
        max_attempts: 1 + f.spec.retry.as_ref().map_or(0, |r| r.attempts),
        tried: Vec::new(),
    };
    let mut retry_token = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let endpoint = attempts.choose()?;
        // Bound in this order so that an early return drops them as the attempt ends: the
        // response first, then the endpoint's count, then the pool admission.
        let Attempt {
            admission,
            in_flight,
            result,
        } = attempts.send(&endpoint, attempt, ctx).await?;
        if let Some(fault) = downstream_fault(&result, &ctx.downstream) {
            // Not the endpoint's failure: it is not judged, and nothing is retried.
            return Err(RequestError::Downstream(fault));
        }
        let (outcome, health) = classify(&result);
        let plan = &attempts.plan;
        plan.state.report(&endpoint, plan.outlier(), health);
        attempts.tried.push(endpoint.info.address);

        let verdict = attempts.verdict(attempt, outcome);
        if let Some(trace) = ctx.record.trace.as_mut() {
            let retried = matches!(verdict, Verdict::Retry(_));
            let (status, error) = match &result {
                Ok(r) => (r.status().as_u16(), None),
                Err(AttemptError::Upstream(UpstreamError::Connect(_))) => (0, Some("connect")),
                Err(AttemptError::Upstream(UpstreamError::Request(_))) => (0, Some("reset")),
                Err(AttemptError::Timeout) => (0, Some("per-try timeout")),
            };
            trace.attempt_ended(status, error, retried || result.is_err());
        }
        match verdict {
            Verdict::Retry(token) => {
                retry_token = token;
                drop(result);
                drop((admission, in_flight));
                if let Some(r) = &f.spec.retry {
                    tokio::time::sleep(r.backoff(attempt)).await;
                }
                continue;
            }
            Verdict::Exhausted => ctx.flag("URX"),
            Verdict::Final => {}
        }
        ctx.guards.push(Box::new(in_flight));
        if let Some(a) = admission {
            ctx.guards.push(Box::new(a));
        }
        if let Some(t) = retry_token.take() {
            ctx.guards.push(Box::new(t));
        }
        return result.map_err(RequestError::from);
    }
}
