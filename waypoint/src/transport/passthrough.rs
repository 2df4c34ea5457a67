//! Opaque TCP through the waypoint: ports declared TCP (and undeclared ports whose bytes are
//! not HTTP) get L4 authorization only, then are spliced to one endpoint of the destination
//! service (or to the addressed workload) over HBONE, with Istio's TCP metrics. A port a TCP
//! route (Gateway API TCPRoute) routes goes to one of its backends instead, picked by weight
//! per connection; the metrics then name that backend's service and workload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hbone::IncomingConnect;
use http::StatusCode;
use proxy_core::connections::{LiveConnections, relay};
use proxy_core::labels::{CONNECT_FAILED, DENIED, Peer, connection_labels};
use proxy_core::state::{ProxyState, Service, Workload};
use proxy_core::telemetry::{ConnectionLabels, ConnectionRecord, Metrics, Reporter};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::io::BoxedIo;
use super::outbound::{HboneUpstream, pod_ip};
use crate::engine::{Caller, EndpointInfo, Engine, Target, TcpChoice};

/// `response_flags` when no endpoint was there to take it.
const NO_HEALTHY_UPSTREAM: &str = "UH";
/// `response_flags` when the route's backend does not exist (Envoy's "no cluster found").
const NO_CLUSTER_FOUND: &str = "NC";

/// Where a TCP connection goes.
struct TcpDestination {
    workload: Arc<Workload>,
    address: SocketAddr,
    service: Option<Arc<Service>>,
}

/// Why a connection was not spliced: what the peer hears (on a tunnel not yet answered), the
/// response flag and the reason logged.
struct Refusal {
    status: StatusCode,
    flag: &'static str,
    reason: String,
}

/// One connection being passed through, for its telemetry.
struct Connection {
    labels: ConnectionLabels,
    client: SocketAddr,
    destination: SocketAddr,
    start: Instant,
}

/// Splices TCP connections to endpoints.
#[derive(Clone)]
pub struct Passthrough {
    upstream: HboneUpstream,
    metrics: Arc<Metrics>,
    connections: Arc<LiveConnections>,
}

impl Passthrough {
    /// Opens upstream streams with `upstream` and reports to `metrics`.
    pub fn new(upstream: HboneUpstream, metrics: Arc<Metrics>) -> Self {
        Self {
            upstream,
            metrics,
            connections: LiveConnections::new(),
        }
    }

    /// A tunnel to a TCP port: authorize and connect upstream first, so the peer hears 401
    /// or 503 rather than 200 followed by a closed stream.
    pub async fn tunnel(
        &self,
        connect: IncomingConnect,
        client: SocketAddr,
        caller: Caller,
        target: Target,
        engine: &Engine,
    ) {
        let (conn, opened) = self.open(client, &caller, &target, engine).await;
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(refusal) => {
                connect.reject(refusal.status);
                self.refused(conn, refusal);
                return;
            }
        };
        match connect.accept() {
            Ok(tunnel) => self.splice(conn, tunnel, upstream).await,
            Err(e) => self.record(conn, (0, 0), Some(e.to_string())),
        }
    }

    /// A tunnel already answered whose bytes turned out not to be HTTP: a refusal can only
    /// close it.
    pub async fn stream<S: AsyncRead + AsyncWrite + Unpin + 'static>(
        &self,
        mut stream: S,
        client: SocketAddr,
        caller: Caller,
        target: Target,
        engine: &Engine,
    ) {
        let (conn, opened) = self.open(client, &caller, &target, engine).await;
        match opened {
            Ok(upstream) => self.splice(conn, stream, upstream).await,
            Err(refusal) => {
                let _ = stream.shutdown().await;
                self.refused(conn, refusal);
            }
        }
    }

    /// Counts the connection as opened, then authorizes it (L4 policy, with the endpoint's
    /// workload-scoped policies once it is chosen) and opens the upstream stream.
    async fn open(
        &self,
        client: SocketAddr,
        caller: &Caller,
        target: &Target,
        engine: &Engine,
    ) -> (Connection, Result<BoxedIo, Refusal>) {
        let start = Instant::now();
        let plan = self.plan(target, engine);
        let conn = Connection {
            labels: self.labels(caller, plan.as_ref().ok()),
            client,
            destination: target.address,
            start,
        };
        self.metrics.connection_opened(&conn.labels);
        if !authorized(engine, caller, target, plan.as_ref().ok()) {
            let refusal = Refusal {
                status: StatusCode::UNAUTHORIZED,
                flag: DENIED,
                reason: "denied by policy".into(),
            };
            return (conn, Err(refusal));
        }
        let plan = match plan {
            Ok(plan) => plan,
            Err(refusal) => return (conn, Err(refusal)),
        };
        let opened = self
            .upstream
            .open(&plan.workload, plan.address, client, None)
            .await
            .map_err(|e| Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                flag: CONNECT_FAILED,
                reason: e.to_string(),
            });
        (conn, opened)
    }

    /// The endpoint for `target`: with a TCP route, one healthy endpoint of the backend it
    /// picks; else one of the service owning the VIP, picked at random, or the workload
    /// owning the address.
    fn plan(&self, target: &Target, engine: &Engine) -> Result<TcpDestination, Refusal> {
        let state: &ProxyState = self.upstream.state();
        let address = target.address;
        let service = match engine.tcp_backend(target) {
            Some(TcpChoice::Backend(b)) => {
                let port = if b.port == 0 { address.port() } else { b.port };
                let service = state.service_by_host(&b.namespace, &b.hostname);
                service.map(|s| (s, port)).ok_or_else(|| Refusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    flag: NO_CLUSTER_FOUND,
                    reason: format!("backend {} is not known", b.hostname),
                })?
            }
            Some(TcpChoice::Unresolved) => {
                return Err(Refusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    flag: NO_CLUSTER_FOUND,
                    reason: "the route's backend does not resolve".into(),
                });
            }
            None => match state.service_by_vip(address.ip()) {
                Some(service) => (service, address.port()),
                None => {
                    return state
                        .workload_by_ip(address.ip())
                        .map(|workload| TcpDestination {
                            workload,
                            address,
                            service: None,
                        })
                        .ok_or_else(no_endpoint);
                }
            },
        };
        let (service, port) = service;
        let endpoints = state.endpoints(&service, port);
        if endpoints.is_empty() {
            return Err(no_endpoint());
        }
        let chosen = &endpoints[fastrand::usize(..endpoints.len())];
        let ip = pod_ip(&chosen.workload).ok_or_else(no_endpoint)?;
        Ok(TcpDestination {
            workload: chosen.workload.clone(),
            address: SocketAddr::new(ip, chosen.port),
            service: Some(service),
        })
    }

    /// Istio's TCP labels, as the waypoint sees the connection.
    fn labels(&self, caller: &Caller, plan: Option<&TcpDestination>) -> ConnectionLabels {
        let source = self.upstream.state().workload_by_ip(caller.ip);
        let destination_identity = plan.map(|p| p.workload.identity());
        connection_labels(
            Reporter::Waypoint,
            Peer {
                workload: source.as_deref(),
                identity: caller.identity.as_ref(),
            },
            Peer {
                workload: plan.map(|p| p.workload.as_ref()),
                identity: destination_identity.as_ref(),
            },
            plan.and_then(|p| p.service.as_deref()),
            true,
        )
    }

    /// Relays both ways until both sides are done (or the connection is cut), then records it.
    async fn splice<C, S>(&self, conn: Connection, client: C, server: S)
    where
        C: AsyncRead + AsyncWrite + Unpin + 'static,
        S: AsyncRead + AsyncWrite + Unpin + 'static,
    {
        let tracked = self.connections.register(None);
        let relayed = relay(client, server, &tracked).await;
        let error = relayed
            .error
            .or_else(|| relayed.cut.map(|reason| reason.to_string()));
        self.record(conn, (relayed.sent, relayed.received), error);
    }

    fn refused(&self, mut conn: Connection, refusal: Refusal) {
        conn.labels.response_flags = refusal.flag.into();
        self.record(conn, (0, 0), Some(refusal.reason));
    }

    fn record(&self, conn: Connection, (sent, received): (u64, u64), error: Option<String>) {
        self.metrics.connection_closed(&ConnectionRecord {
            labels: conn.labels,
            source: conn.client,
            destination: conn.destination,
            bytes_sent: sent,
            bytes_received: received,
            duration: conn.start.elapsed(),
            error,
        });
    }
}

/// No endpoint to take the connection.
fn no_endpoint() -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        flag: NO_HEALTHY_UPSTREAM,
        reason: "no endpoint".into(),
    }
}

/// L4 authorization of the connection; with the endpoint known, the policies scoped to its
/// workload apply too.
fn authorized(
    engine: &Engine,
    caller: &Caller,
    target: &Target,
    plan: Option<&TcpDestination>,
) -> bool {
    match plan {
        Some(plan) => {
            let endpoint = EndpointInfo {
                uid: plan.workload.uid.clone(),
                address: plan.address,
            };
            engine.authorize_connection_to(caller, target, &endpoint)
        }
        None => engine.authorize_connection(caller, target),
    }
}
