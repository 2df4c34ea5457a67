//! The engine's way out: endpoints and services from the workload API ([`ProxyState`]), and
//! requests sent to an endpoint over HBONE (to its ztunnel on port 15008, with the waypoint's
//! certificate, expecting the endpoint's own identity, carrying the caller's address in
//! `forwarded`) or over plain TCP to endpoints outside the mesh.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hbone::{ConnectRequest, Identity};
use http::{Request, Response, Version};
use proxy_core::identity::CertManager;
use proxy_core::state::{ProxyState, TunnelProtocol, Workload};

use super::hop;
use super::http_pool::{HttpPool, PoolKey, PoolSettings};
use super::io::BoxedIo;
use super::upgrade;
use crate::engine::{
    Body, Caller, EndpointInfo, SendFuture, UpstreamClient, UpstreamError, UpstreamHints,
    WorkloadMeta, upgrade_protocol,
};

/// W3C trace context, carried on the `CONNECT` of a new tunnel.
const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Tunables of the upstream side.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// The port endpoints' ztunnels take HBONE on (15008).
    pub hbone_port: u16,
    /// Longest wait for a plain TCP connection to an endpoint outside the mesh.
    pub connect_timeout: Duration,
    /// HTTP connection reuse.
    pub pool: PoolSettings,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            hbone_port: hbone::HBONE_PORT,
            connect_timeout: Duration::from_secs(10),
            pool: PoolSettings::default(),
        }
    }
}

struct OutboundShared {
    state: ProxyState,
    /// The state's change counter, read (not awaited) for [`UpstreamClient::state_version`].
    changes: tokio::sync::watch::Receiver<u64>,
    certs: Arc<CertManager>,
    identity: Identity,
    tunnels: hbone::Pool,
    http: Arc<HttpPool>,
    settings: UpstreamSettings,
}

/// [`UpstreamClient`] over HBONE. Cheap to clone.
#[derive(Clone)]
pub struct HboneUpstream {
    inner: Arc<OutboundShared>,
}

impl HboneUpstream {
    /// Sends as `identity` (the waypoint's), with certificates from `certs`. Must be called
    /// within a tokio runtime.
    pub fn new(
        state: ProxyState,
        certs: Arc<CertManager>,
        identity: Identity,
        settings: UpstreamSettings,
    ) -> Self {
        let http = HttpPool::new(settings.pool.clone());
        Self {
            inner: Arc::new(OutboundShared {
                changes: state.changes(),
                state,
                certs,
                identity,
                tunnels: hbone::Pool::default(),
                http,
                settings,
            }),
        }
    }

    /// The mesh state endpoints come from.
    pub fn state(&self) -> &ProxyState {
        &self.inner.state
    }

    /// HTTP connections held for reuse.
    pub fn pooled_connections(&self) -> usize {
        self.inner.http.connection_count()
    }

    /// Opens a byte stream to `target` on `workload`: an HBONE tunnel to its ztunnel (a
    /// meshed workload) or a TCP connection (a workload outside the mesh). `client` is the
    /// original caller's address, sent as `forwarded`.
    pub async fn open(
        &self,
        workload: &Workload,
        target: SocketAddr,
        client: SocketAddr,
        traceparent: Option<String>,
    ) -> Result<BoxedIo, UpstreamError> {
        let inner = &self.inner;
        match workload.protocol {
            TunnelProtocol::Hbone => {
                let cert =
                    inner.certs.fetch(&inner.identity).await.map_err(|e| {
                        UpstreamError::Connect(format!("waypoint certificate: {e}"))
                    })?;
                let peer = hbone::Upstream {
                    address: SocketAddr::new(target.ip(), inner.settings.hbone_port),
                    identities: vec![workload.identity()],
                    source_ip: None,
                };
                let mut request = ConnectRequest::new(target);
                request.forwarded_for = Some(client);
                request.traceparent = traceparent;
                let tunnel = inner
                    .tunnels
                    .connect(&cert, &peer, &request)
                    .await
                    .map_err(|e| UpstreamError::Connect(e.to_string()))?;
                Ok(Box::new(tunnel))
            }
            TunnelProtocol::Tcp => {
                let connect = tokio::net::TcpStream::connect(target);
                let tcp = tokio::time::timeout(inner.settings.connect_timeout, connect)
                    .await
                    .map_err(|_| {
                        UpstreamError::Connect(format!("connecting to {target}: timed out"))
                    })?
                    .map_err(|e| UpstreamError::Connect(format!("connecting to {target}: {e}")))?;
                let _ = tcp.set_nodelay(true);
                Ok(Box::new(tcp))
            }
        }
    }

    /// The workload behind `endpoint`: by uid, else by address.
    fn workload_of(&self, endpoint: &EndpointInfo) -> Option<Arc<Workload>> {
        let state = &self.inner.state;
        state
            .workload_by_uid(&endpoint.uid)
            .or_else(|| state.workload_by_ip(endpoint.address.ip()))
    }

    /// Sends `request` to `target` on `workload` for the caller at `caller`, on a pooled
    /// connection or a new one.
    async fn exchange(
        self,
        workload: Arc<Workload>,
        target: SocketAddr,
        caller: IpAddr,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, UpstreamError> {
        // An upgrade goes as HTTP/1.1 on a connection of its own.
        let upgrade = upgrade_protocol(request.headers()).is_some();
        let http2 = !upgrade && (request.version() == Version::HTTP_2 || is_grpc(&request));
        let version = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        // Only a new connection carries it, on its CONNECT.
        let traceparent = request.headers().get(TRACEPARENT).cloned();
        let connect_timeout = request
            .extensions()
            .get::<UpstreamHints>()
            .and_then(|h| h.connect_timeout);
        hop::for_upstream(&mut request, version);
        let key = PoolKey {
            endpoint: target,
            uid: workload.uid.clone(),
            caller,
            http2,
        };
        // The caller's port is not known here; RFC 7239 allows a node without one: with
        // port 0 the hbone client sends the bare IP.
        let client = SocketAddr::new(caller, 0);
        let opener = self.clone();
        let open = move || async move {
            let traceparent = traceparent.and_then(|v| v.to_str().ok().map(str::to_owned));
            let opening = opener.open(&workload, target, client, traceparent);
            match connect_timeout {
                Some(limit) => tokio::time::timeout(limit, opening).await.map_err(|_| {
                    UpstreamError::Connect(format!("connecting to {target}: timed out"))
                })?,
                None => opening.await,
            }
        };
        if upgrade {
            let max_header_bytes = self.inner.settings.pool.max_header_bytes;
            return upgrade::send(open().await?, request, max_header_bytes).await;
        }
        let mut response = self.inner.http.send(key, request, open).await?;
        hop::strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }
}

/// Whether `request` is gRPC (always HTTP/2 upstream, whatever the client spoke).
fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

impl UpstreamClient for HboneUpstream {
    fn endpoints(&self, namespace: &str, hostname: &str, port: u16) -> Vec<EndpointInfo> {
        let state = &self.inner.state;
        let Some(service) = state.service_by_host(namespace, hostname) else {
            return Vec::new();
        };
        state
            .endpoints(&service, port)
            .into_iter()
            .filter_map(|endpoint| {
                let ip = pod_ip(&endpoint.workload)?;
                Some(EndpointInfo {
                    uid: endpoint.workload.uid.clone(),
                    address: SocketAddr::new(ip, endpoint.port),
                })
            })
            .collect()
    }

    fn state_version(&self) -> Option<u64> {
        Some(*self.inner.changes.borrow())
    }

    fn service_by_vip(&self, ip: IpAddr) -> Option<(String, String)> {
        self.inner
            .state
            .service_by_vip(ip)
            .map(|s| (s.namespace.clone(), s.hostname.clone()))
    }

    fn workload(&self, ip: IpAddr) -> Option<WorkloadMeta> {
        let w = self.inner.state.workload_by_ip(ip)?;
        Some(WorkloadMeta {
            workload: w.workload_name.clone(),
            namespace: w.namespace.clone(),
            canonical_service: w.canonical_name.clone(),
            canonical_revision: w.canonical_revision.clone(),
            cluster: w.cluster_id.clone(),
            identity: w.try_identity().ok(),
        })
    }

    fn send(&self, endpoint: &EndpointInfo, caller: &Caller, request: Request<Body>) -> SendFuture {
        let target = endpoint.address;
        let Some(workload) = self.workload_of(endpoint) else {
            let error = UpstreamError::Connect(format!("no workload is known at {target}"));
            return Box::pin(std::future::ready(Err(error)));
        };
        Box::pin(self.clone().exchange(workload, target, caller.ip, request))
    }
}

/// The address a workload is reached at: its first pod IP.
pub fn pod_ip(workload: &Workload) -> Option<IpAddr> {
    workload.addresses.first().copied()
}
