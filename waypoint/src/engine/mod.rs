//! The request pipeline, independent of how bytes arrive or leave: it is given a request, the
//! service and port it was addressed to and who sent it, and an [`Upstream`] to send to.
//!
//! [`Engine::handle`] runs, in order: find the served service (the target VIP, from the config
//! or [`Upstream::service_by_vip`]; a target this waypoint does not serve is answered 404 with
//! flag NR rather than forwarded, so the waypoint never relays traffic its config does not
//! cover), L7 authorization (403), the service's rate limit (429), route matching (first
//! match; none: 404 NR), redirect or direct answer, fault injection, the weighted choice of
//! destination, then attempts: endpoint choice (subset, outlier ejection, load balancer),
//! workload-scoped authorization, connection-pool admission, the exchange with per-try and
//! route timeouts, and retries within the policy and budget. Mirrors are sent on the side.
//! A failure the client caused (a malformed or abandoned body, a body too slow to arrive) is
//! answered for the client and never counted against the upstream.
//!
//! Modules: [`config`] compiles the proto once per version; [`matching`], [`headers`],
//! [`select`], [`endpoints`], [`balance`], [`pool`], [`outlier`], [`retry`], [`fault`],
//! [`ratelimit`], [`authz`], [`mirror`], [`body`], [`downstream`] and [`telemetry`] each
//! hold one concern; [`runtime`] keeps what outlives a config version. What a request
//! derives from the mesh state (candidate endpoints, workload labels) is kept until
//! [`Upstream::state_version`] changes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

mod authz;
mod balance;
mod body;
mod config;
mod downstream;
mod endpoints;
mod fault;
mod forward;
mod handle;
mod headers;
mod matching;
mod mirror;
mod outlier;
mod pool;
mod ratelimit;
mod reply;
mod retry;
mod runtime;
mod select;
mod telemetry;

#[cfg(test)]
mod tests;

pub use runtime::Runtime;

/// Body type flowing through the engine.
pub type Body = BoxBody<Bytes, BoxError>;
/// Error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a waypoint config was refused (the previous one stays in force).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Who sent a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Verified identity of the original client (from the HBONE peer), if any.
    pub identity: Option<hbone::Identity>,
    /// Original client IP.
    pub ip: IpAddr,
}

/// Where a request was addressed.
#[derive(Clone, Debug)]
pub struct Target {
    /// The original destination (`:authority` of the HBONE CONNECT): a service VIP and port.
    pub address: SocketAddr,
}

/// One endpoint the engine may send to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// Workload uid (matches `Subset.workload_uids`).
    pub uid: String,
    /// Address to connect to (pod IP and target port).
    pub address: SocketAddr,
}

/// What request telemetry reports about a workload (Istio's workload labels).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadMeta {
    /// Owning workload name (the Deployment's), for `*_workload`.
    pub workload: String,
    /// Namespace, for `*_workload_namespace`.
    pub namespace: String,
    /// Canonical service (the `app` label), for `*_app` / `*_canonical_service`.
    pub canonical_service: String,
    /// Canonical revision (the `version` label), for `*_version` / `*_canonical_revision`.
    pub canonical_revision: String,
    /// Cluster id, for `*_cluster`.
    pub cluster: String,
    /// The workload's identity, for `*_principal`.
    pub identity: Option<hbone::Identity>,
}

/// Connection settings of the destination's connection pool, attached to each request the
/// engine sends (as a request extension) for the transport's connection handling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamHints {
    /// Requests sent over one connection before it is closed; 0: no limit.
    pub max_requests_per_connection: u32,
    /// Limit on establishing a connection; `None`: the transport's default.
    pub connect_timeout: Option<Duration>,
}

/// Why an upstream exchange failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made (refused, reset, HBONE error).
    #[error("connect: {0}")]
    Connect(String),
    /// The exchange broke after the connection was made.
    #[error("request: {0}")]
    Request(String),
}

/// The response of [`Upstream::send`], once the upstream answers.
pub type SendFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Body>, UpstreamError>> + Send>,
>;

/// What the engine needs from the transport.
pub trait Upstream: Send + Sync + 'static {
    /// Healthy endpoints of service `hostname` (in `namespace`) for service port `port`.
    fn endpoints(&self, namespace: &str, hostname: &str, port: u16) -> Vec<EndpointInfo>;

    /// The service (namespace, hostname) owning virtual IP `ip`.
    fn service_by_vip(&self, ip: IpAddr) -> Option<(String, String)>;

    /// Sends `request` to `endpoint` (over HBONE, carrying `caller` forward) and returns the
    /// response head and streaming body.
    fn send(
        &self,
        endpoint: &EndpointInfo,
        caller: &Caller,
        request: http::Request<Body>,
    ) -> SendFuture;

    /// Telemetry labels of the workload at `ip` (a caller or an endpoint); `None` leaves the
    /// labels "unknown".
    fn workload(&self, ip: IpAddr) -> Option<WorkloadMeta> {
        let _ = ip;
        None
    }

    /// A number that changes whenever what [`Upstream::endpoints`] and
    /// [`Upstream::workload`] answer may have changed. The engine keeps what it derives from
    /// them (candidate endpoints, metric labels) until it changes; `None`, the default, keeps
    /// nothing: every request asks again.
    fn state_version(&self) -> Option<u64> {
        None
    }
}

/// The mesh state something was derived from: which upstream (its address) and its
/// [`Upstream::state_version`] then. Entries stamped otherwise are stale.
pub(crate) type StateStamp = (usize, u64);

/// The stamp of `upstream`'s current state; `None` when it gives no version (nothing may be
/// kept). Read before the answers derived from it: a change after this read shows as a new
/// stamp next time, never as an old stamp with new contents.
pub(crate) fn state_stamp(upstream: &Arc<dyn Upstream>) -> Option<StateStamp> {
    let version = upstream.state_version()?;
    Some((Arc::as_ptr(upstream).cast::<()>() as usize, version))
}

/// Gives `headers` the `x-request-id` and `traceparent` the engine gives every request it
/// handles, and returns the trace id written to the access log ("" for none).
///
/// Public only so the header parsing can be fuzzed; requests get this inside
/// [`Engine::handle`].
#[doc(hidden)]
pub fn identify_request(headers: &mut http::HeaderMap) -> String {
    headers::identify(headers).1.as_str().to_owned()
}

/// A compiled waypoint config.
pub struct Engine {
    config: config::Compiled,
    runtime: Arc<Runtime>,
}

impl Engine {
    /// Compiles the controller's config (regexes, weights, policies); refuses it as a whole
    /// when any part is unusable.
    pub fn compile(
        config: &api::waypoint::Waypoint,
        runtime: Arc<Runtime>,
    ) -> Result<Engine, ConfigError> {
        let compiled = config::Compiled::compile(config)?;
        runtime.retain(&compiled.hostnames());
        runtime.outlier_detection(compiled.outlier_specs());
        Ok(Engine {
            config: compiled,
            runtime,
        })
    }

    /// Whether `target` is a service port declared TCP (pass bytes through with L4 policy
    /// only), HTTP, or unknown (detect).
    pub fn port_protocol(&self, target: &Target) -> api::waypoint::Protocol {
        self.config
            .by_vip
            .get(&target.address.ip())
            .map_or(api::waypoint::Protocol::Unspecified, |s| {
                s.protocol(target.address.port())
            })
    }

    /// L4 authorization for a connection (used for TCP pass-through): DENY/ALLOW policies
    /// without HTTP attributes. Policies scoped to workloads are left to
    /// [`Engine::authorize_connection_to`], once the endpoint is known.
    pub fn authorize_connection(&self, caller: &Caller, target: &Target) -> bool {
        self.connection_check(caller, target, None)
    }

    /// L4 authorization for a connection to a chosen `endpoint`: as
    /// [`Engine::authorize_connection`], plus the policies scoped to that workload.
    pub fn authorize_connection_to(
        &self,
        caller: &Caller,
        target: &Target,
        endpoint: &EndpointInfo,
    ) -> bool {
        self.connection_check(caller, target, Some(&endpoint.uid))
    }

    fn connection_check(&self, caller: &Caller, target: &Target, uid: Option<&str>) -> bool {
        let principal = caller.identity.as_ref().map(handle::principal);
        let input = authz::Input {
            principal: principal.as_deref(),
            namespace: caller.identity.as_ref().map(|i| i.namespace()),
            source_ip: caller.ip,
            remote_ip: caller.ip,
            destination_ip: target.address.ip(),
            destination_port: target.address.port(),
            http: None,
        };
        let service = self
            .config
            .by_vip
            .get(&target.address.ip())
            .map_or("", |s| s.hostname.as_str());
        let pending = match self.config.authz.check_request(&input, service) {
            Ok(p) => p,
            Err(denied) => {
                tracing::debug!(%denied, "connection denied");
                return false;
            }
        };
        match uid {
            Some(uid) => self
                .config
                .authz
                .check_endpoint(&input, pending, uid)
                .is_ok(),
            None => true,
        }
    }

    /// Handles one request end to end and never fails: every error becomes a response
    /// (403 denied, 429 rate limited, 404 no route, 503 no healthy upstream or overflow,
    /// 504 timeout, injected faults; for the client's own faults 400 malformed body, 408
    /// body too slow, 499 client gone).
    pub async fn handle(
        self: &Arc<Self>,
        upstream: Arc<dyn Upstream>,
        caller: Caller,
        target: Target,
        request: http::Request<Body>,
    ) -> http::Response<Body> {
        handle::run(self, upstream, caller, target, request).await
    }
}
