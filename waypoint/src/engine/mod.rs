//! The request pipeline, independent of how bytes arrive or leave: it is given a request, the
//! service and port it was addressed to and who sent it, and an [`Upstream`] to send to.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

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
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<http::Response<Body>, UpstreamError>>
                + Send
                + 'static,
        >,
    >;
}

/// State that outlives config updates: request metrics, endpoint health (outlier detection),
/// connection-pool and least-request counters, rate-limit buckets, retry budgets.
pub struct Runtime {
    _private: (),
}

impl Runtime {
    /// Fresh state.
    pub fn new() -> Arc<Self> {
        todo!()
    }

    /// Prometheus text of the request metrics (`istio_requests_total`,
    /// `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`).
    pub fn render_metrics(&self) -> String {
        todo!()
    }
}

/// A compiled waypoint config.
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Compiles the controller's config (regexes, weights, policies); refuses it as a whole
    /// when any part is unusable.
    pub fn compile(
        config: &api::waypoint::Waypoint,
        runtime: Arc<Runtime>,
    ) -> Result<Engine, ConfigError> {
        let _ = (config, runtime);
        todo!()
    }

    /// Whether `target` is a service port declared TCP (pass bytes through with L4 policy
    /// only), HTTP, or unknown (detect).
    pub fn port_protocol(&self, target: &Target) -> api::waypoint::Protocol {
        let _ = target;
        todo!()
    }

    /// L4 authorization for a connection (used for TCP pass-through): DENY/ALLOW policies
    /// without HTTP attributes.
    pub fn authorize_connection(&self, caller: &Caller, target: &Target) -> bool {
        let _ = (caller, target);
        todo!()
    }

    /// Handles one request end to end and never fails: every error becomes a response
    /// (403 denied, 429 rate limited, 404 no route, 503 no healthy upstream or overflow,
    /// 504 timeout, injected faults).
    pub async fn handle(
        self: &Arc<Self>,
        upstream: Arc<dyn Upstream>,
        caller: Caller,
        target: Target,
        request: http::Request<Body>,
    ) -> http::Response<Body> {
        let _ = (upstream, caller, target, request);
        todo!()
    }

}
