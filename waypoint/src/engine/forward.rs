//! Forwarding a routed request: destination choice, mirrors, and the attempt loop (endpoint
//! choice, workload-scoped authorization, pool admission, per-try timeout, classification,
//! retry) under the route's timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Body as _;

use super::authz::AuthzSnapshot;
use super::body::{self, Body, Replay};
use super::compiled::Engine;
use super::config::{DestSpec, ForwardSpec, RouteEntry};
use super::context::RequestContext;
use super::downstream::{Fault, Watch};
use super::fault::roll;
use super::mirror::{self, MirrorBody};
use super::origin::{Caller, Target};
use super::outlier::Health;
use super::pool::PoolState;
use super::reply::RequestError;
use super::retry::{Budget, Outcome};
use super::runtime::UpstreamState;
use super::upstream::{UpstreamClient, UpstreamError, UpstreamHints};
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
    /// The engine (config and runtime state).
    pub engine: &'a Arc<Engine>,
    /// The transport.
    pub upstream: &'a Arc<dyn UpstreamClient>,
    /// Who sent the request.
    pub caller: &'a Caller,
    /// Where it was addressed.
    pub target: &'a Target,
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
    if let Some(rewrite) = &spec.rewrite {
        rewrite.apply(&mut parts, f.prefix);
    }
    let dest = &chosen.dest;
    ctx.service(&dest.labels);

    let mirrors: Vec<_> = spec.mirrors.iter().filter(|m| roll(m.percentage)).collect();
    let mut source = if request_body.is_end_stream() {
        Source::Empty
    } else if spec.retry.is_some() || !mirrors.is_empty() {
        Source::Replay(Replay::new(request_body))
    } else {
        Source::Once(Some(request_body))
    };
    let template = Template::of(parts);
    for m in mirrors {
        let port = if m.dest.port != 0 {
            m.dest.port
        } else {
            f.target.address.port()
        };
        mirror::spawn(mirror::MirrorRequest {
            engine: f.engine.clone(),
            upstream: f.upstream.clone(),
            caller: f.caller.clone(),
            dest: m.dest.clone(),
            port,
            parts: template.to_parts(),
            body: source.mirror_body(),
            deadline: spec.timeout,
        });
    }

    let attempts = attempts(&f, dest, template, &mut source, ctx);
    let mut response = match spec.timeout {
        Some(limit) => match tokio::time::timeout(limit, attempts).await {
            Ok(r) => r?,
            // Still waiting for the client's body, the time ran out on the client.
            Err(_) => {
                return Err(ctx
                    .downstream
                    .timeout_fault()
                    .map_or(RequestError::Timeout, RequestError::Downstream));
            }
        },
        None => attempts.await?,
    };
    chosen.response_headers.apply(response.headers_mut());
    f.route.response_headers.apply(response.headers_mut());
    Ok(response)
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

/// Resolves `dest`'s policy and state; the request is counted in the retry budget here.
fn plan<'a>(f: &Forwarding<'a>, dest: &'a DestSpec) -> Result<AttemptPlan<'a>, RequestError> {
    let port = if dest.port != 0 {
        dest.port
    } else {
        f.target.address.port()
    };
    let policy = f
        .engine
        .config
        .destinations
        .get(&dest.hostname)
        .map(Arc::as_ref);
    let resolved = select::resolve(dest, policy)
        .ok_or_else(|| RequestError::NoCluster(dest.subset.clone().unwrap_or_default()))?;
    let state = f.engine.runtime.upstream(&dest.hostname);
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

/// The attempt loop: endpoint choice, workload-scoped authorization, pool admission, the
/// exchange under the per-try timeout, then the verdict on the endpoint and on a retry.
async fn attempts(
    f: &Forwarding<'_>,
    dest: &DestSpec,
    mut template: Template,
    source: &mut Source,
    ctx: &mut RequestContext,
) -> Result<Response<Body>, RequestError> {
    let spec = f.spec;
    let AttemptPlan {
        port,
        resolved,
        state,
        budget,
        pool,
        hints,
    } = plan(f, dest)?;
    let outlier = resolved.policy.outlier.as_ref();
    let max_attempts = 1 + spec.retry.as_ref().map_or(0, |r| r.attempts);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_token = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let candidates = dest
            .endpoints
            .candidates(f.upstream, &state, port, resolved.uids);
        let endpoint = endpoints::choose(&state, resolved.policy.lb, &candidates, outlier, &tried)
            .ok_or(RequestError::NoHealthyUpstream)?;
        if let Some(snapshot) = &f.authz {
            f.engine
                .config
                .authz
                .check_endpoint(&snapshot.input(), snapshot.pending, &endpoint.info.uid)
                .map_err(RequestError::Denied)?;
        }
        let admission = match &pool {
            Some(p) => Some(p.admit().await.map_err(|_| RequestError::Overflow)?),
            None => None,
        };
        let in_flight = endpoint.state.start();
        ctx.record.upstream = Some(endpoint.info.address);
        ctx.destination(
            f.engine
                .runtime
                .peers
                .destination(f.upstream, endpoint.info.address.ip()),
        );
        let body = source
            .next()
            .ok_or_else(|| RequestError::Reset("request body already sent".into()))?;
        let request = template.request(body, attempt >= max_attempts, hints);
        let sent = f.upstream.send(&endpoint.info, f.caller, request);
        let result = match spec.attempt_timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(r) => r.map_err(AttemptError::Upstream),
                Err(_) => Err(AttemptError::Timeout),
            },
            None => sent.await.map_err(AttemptError::Upstream),
        };
        if let Some(fault) = downstream_fault(&result, &ctx.downstream) {
            // Not the endpoint's failure: it is not judged, and nothing is retried.
            return Err(RequestError::Downstream(fault));
        }
        let (outcome, health) = classify(&result);
        state.report(&endpoint, outlier, health);
        tried.push(endpoint.info.address);

        let retriable = spec
            .retry
            .as_ref()
            .is_some_and(|r| r.should_retry(outcome, &template.method));
        if retriable {
            let more = attempt < max_attempts && source.replayable();
            // Pool retry limit first: a refused retry must not spend the budget.
            let token = more
                .then(|| match &pool {
                    Some(p) => p.try_retry().map(Some),
                    None => Some(None),
                })
                .flatten();
            let allowed = token.is_some() && budget.as_ref().is_none_or(|b| b.try_retry());
            if allowed {
                retry_token = token.flatten();
                drop(result);
                drop((admission, in_flight));
                if let Some(r) = &spec.retry {
                    tokio::time::sleep(r.backoff(attempt)).await;
                }
                continue;
            }
            ctx.flag("URX");
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
