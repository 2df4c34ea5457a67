//! The engine's boundary with the transport on the way out: the [`UpstreamClient`] it is
//! handed (endpoints and workloads from the mesh state, and a way to send a request to an
//! endpoint), and the types that cross it. It imports only [`Body`] and [`Caller`] from the
//! engine.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::body::Body;
use super::origin::Caller;

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

/// The response of [`UpstreamClient::send`], once the upstream answers.
pub type SendFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Body>, UpstreamError>> + Send>,
>;

/// What the engine needs from the transport.
pub trait UpstreamClient: Send + Sync + 'static {
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

    /// A number that changes whenever what [`UpstreamClient::endpoints`] and
    /// [`UpstreamClient::workload`] answer may have changed. The engine keeps what it derives
    /// from them (candidate endpoints, metric labels) until it changes; `None`, the default,
    /// keeps nothing: every request asks again.
    fn state_version(&self) -> Option<u64> {
        None
    }
}

/// The mesh state something was derived from: which upstream (its address) and its
/// [`UpstreamClient::state_version`] then. Entries stamped otherwise are stale.
pub(crate) type StateStamp = (usize, u64);

/// The stamp of `upstream`'s current state; `None` when it gives no version (nothing may be
/// kept). Read before the answers derived from it: a change after this read shows as a new
/// stamp next time, never as an old stamp with new contents.
pub(crate) fn state_stamp(upstream: &Arc<dyn UpstreamClient>) -> Option<StateStamp> {
    let version = upstream.state_version()?;
    Some((Arc::as_ptr(upstream).cast::<()>() as usize, version))
}
