//! The data path of one captured pod: outbound (15001), inbound plaintext (15006) and inbound
//! HBONE (15008) listeners inside the pod's network namespace.
//!
//! ```text
//! app ──REDIRECT──► 15001 outbound ──resolve──► HBONE (pool) / TCP / passthrough
//! peer ztunnel ──HBONE──► 15008 inbound ──authz──► app (from the client's IP)
//! plaintext client ──TPROXY──► 15006 passthrough ──authz (no identity)──► app
//! ```
//!
//! Every socket is created inside the pod's namespace and carries [`socket::PROXY_MARK`], so
//! the pod's redirection rules let the proxy's own traffic through.

mod inbound;
pub mod netns;
mod outbound;
mod passthrough;
pub mod resolve;
pub mod socket;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hbone::Identity;
use http::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use proxy_core::identity::CertManager;
use proxy_core::state::{ProxyState, Workload, identity_of};
use proxy_core::telemetry::{ConnectionLabels, ConnectionRecord, Metrics};

use proxy_core::connections::{CloseReason, LiveConnections, Relayed};
use proxy_core::labels;

pub use netns::PodNetns;

/// Outbound capture port (the pod's connections are REDIRECTed here).
pub const OUTBOUND_PORT: u16 = 15001;
/// Inbound plaintext port (TPROXY delivers connections to the pod here).
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Inbound HBONE port.
pub const INBOUND_HBONE_PORT: u16 = hbone::HBONE_PORT;

/// Ports of the proxy itself: a connection asking for one of them would loop back into the
/// proxy, so it is refused (Istio's "illegal ports").
const OWN_PORTS: [u16; 3] = [OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, INBOUND_HBONE_PORT];

/// Longest wait for a plain TCP connect to an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cut connections and stopped tasks get to wind down after the drain deadline.
const CUT_GRACE: Duration = Duration::from_secs(5);

/// Everything one pod's proxy needs.
#[derive(Clone)]
pub struct PodContext {
    /// Pod uid (as sent over ZDS).
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod service account.
    pub service_account: String,
    /// The pod's network namespace.
    pub netns: Arc<PodNetns>,
    /// This node's name.
    pub node: String,
    /// Trust domain of identities.
    pub trust_domain: String,
    /// Mesh config.
    pub state: ProxyState,
    /// Certificates.
    pub certs: Arc<CertManager>,
    /// Telemetry.
    pub metrics: Arc<Metrics>,
    /// What a peer may hold on the pod's HBONE listener.
    pub limits: hbone::ServerLimits,
}

/// Why a proxied connection failed; mapped to an HBONE status and a response flag at the
/// edges.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The CONNECT asked for an address that is not this pod's (confused deputy).
    #[error("authority {0} is not an address of this pod")]
    AuthorityMismatch(SocketAddr),
    /// The destination is one of the proxy's own ports.
    #[error("destination port {0} is the proxy's own")]
    SelfCall(u16),
    /// This pod's workload is not (yet) known from the controller.
    #[error("this pod's workload is not known")]
    UnknownWorkload,
    /// Authorization denied the connection.
    #[error("denied: {0}")]
    Denied(String),
    /// The upstream could not be reached.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The redirected connection has no original destination.
    #[error("no original destination: {0}")]
    OriginalDestination(io::Error),
    /// The destination cannot be resolved.
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// No certificate for this pod.
    #[error("certificate: {0}")]
    Certificate(#[from] proxy_core::identity::IdentityError),
    /// The HBONE tunnel could not be opened.
    #[error("HBONE: {0}")]
    Hbone(#[from] hbone::Error),
}

impl ProxyError {
    /// The status an HBONE CONNECT failing this way is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AuthorityMismatch(_) => StatusCode::BAD_REQUEST,
            ProxyError::Denied(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `response_flags` label of a connection failing this way.
    pub fn response_flag(&self) -> &'static str {
        match self {
            ProxyError::Denied(_) => labels::DENIED,
            ProxyError::Hbone(e) if e.is_denied() => labels::DENIED,
            ProxyError::Resolve(e) => e.response_flag(),
            _ => labels::CONNECT_FAILED,
        }
    }
}

/// What every listener of one pod shares.
pub(crate) struct Shared {
    pub(crate) ctx: PodContext,
    /// The pod's own identity (from its service account).
    pub(crate) identity: Identity,
    pub(crate) registry: Arc<LiveConnections>,
    /// HBONE client connections of this pod, dialed from inside its namespace.
    pub(crate) pool: hbone::Pool,
}

impl Shared {
    /// This pod's workload: the one owning `ip` if it is this pod, else found by uid.
    pub(crate) fn local_workload(&self, ip: Option<IpAddr>) -> Option<Arc<Workload>> {
        let state = &self.ctx.state;
        ip.and_then(|ip| state.workload_by_ip(ip))
            .filter(|w| w.namespace == self.ctx.namespace && w.name == self.ctx.name)
            .or_else(|| state.workload_by_uid(&self.ctx.uid))
    }

    /// Counts a connection as opened; the returned record closes it later, through
    /// [`Shared::record`] or [`Shared::record_failure`].
    pub(crate) fn opened(
        &self,
        labels: ConnectionLabels,
        source: SocketAddr,
        destination: SocketAddr,
        start: Instant,
    ) -> Finished {
        self.ctx.metrics.connection_opened(&labels);
        Finished {
            labels,
            source,
            destination,
            start,
        }
    }

    /// Reports a finished connection.
    pub(crate) fn record(&self, mut finished: Finished, relayed: Relayed) {
        if let Some(cut) = &relayed.cut {
            finished.labels.response_flags = cut.response_flag().to_owned();
        }
        let error = relayed
            .error
            .or_else(|| relayed.cut.as_ref().map(CloseReason::to_string));
        self.closed(finished, relayed.sent, relayed.received, error);
    }

    /// Reports a connection that failed before any byte flowed.
    pub(crate) fn record_failure(&self, mut finished: Finished, error: &ProxyError) {
        finished.labels.response_flags = error.response_flag().to_owned();
        self.closed(finished, 0, 0, Some(error.to_string()));
    }

    fn closed(&self, finished: Finished, sent: u64, received: u64, error: Option<String>) {
        self.ctx.metrics.connection_closed(&ConnectionRecord {
            labels: finished.labels,
            source: finished.source,
            destination: finished.destination,
            bytes_sent: sent,
            bytes_received: received,
            duration: finished.start.elapsed(),
            error,
        });
    }
}

/// What the access log and the close metrics need about an opened connection (made by
/// [`Shared::opened`]).
pub(crate) struct Finished {
    pub(crate) labels: ConnectionLabels,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) start: Instant,
}

/// A running pod proxy: its listeners and live connections.
pub struct PodProxy {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    /// Accept loops and the HBONE server: they end on shutdown.
    listeners: Vec<JoinHandle<()>>,
    /// Policy re-checks: they run until the very end of a drain.
    recheck: Option<JoinHandle<()>>,
}

impl PodProxy {
    /// Binds the three listeners inside the pod's namespace (SO_REUSEPORT so an overlapping
    /// proxy can take over) and starts serving.
    ///
    /// Returns as soon as the listeners are bound: inbound HBONE connections wait in the
    /// backlog until the pod's first certificate arrives.
    pub async fn start(context: PodContext) -> std::io::Result<PodProxy> {
        let identity = pod_identity(&context)?;
        let netns = context.netns.clone();
        let outbound = socket::bind_listener(&netns, OUTBOUND_PORT, true)?;
        let plaintext = socket::bind_listener(&netns, INBOUND_PLAINTEXT_PORT, true)?;
        let hbone_listener = socket::bind_listener(&netns, INBOUND_HBONE_PORT, true)?;

        let factory_netns = netns.clone();
        let pool = hbone::Pool::new(hbone::PoolConfig {
            socket_factory: Some(hbone::SocketFactory::new(move |peer| {
                socket::upstream_socket(&factory_netns, peer, None)
            })),
            ..hbone::PoolConfig::default()
        });
        let changes = context.state.authz_changes();
        let shared = Arc::new(Shared {
            ctx: context,
            identity,
            registry: LiveConnections::new(),
            pool,
        });
        let (shutdown, stop) = watch::channel(false);
        let listeners = vec![
            tokio::spawn(outbound::serve(shared.clone(), outbound, stop.clone())),
            tokio::spawn(passthrough::serve(shared.clone(), plaintext, stop.clone())),
            tokio::spawn(inbound::serve(shared.clone(), hbone_listener, stop)),
        ];
        let recheck = tokio::spawn(recheck_on_changes(shared.clone(), changes));
        info!(pod = %shared.ctx.name, namespace = %shared.ctx.namespace, identity = %shared.identity, "pod proxy started");
        Ok(PodProxy {
            shared,
            shutdown,
            listeners,
            recheck: Some(recheck),
        })
    }

    /// Stops accepting, lets live connections finish for up to `deadline`, then cuts them.
    pub async fn drain(mut self, deadline: Duration) {
        let _ = self.shutdown.send(true);
        let registry = self.shared.registry.clone();
        info!(pod = %self.shared.ctx.name, connections = registry.len(), "pod proxy draining");
        if tokio::time::timeout(deadline, registry.wait_empty())
            .await
            .is_err()
        {
            warn!(pod = %self.shared.ctx.name, connections = registry.len(), "drain deadline passed; cutting connections");
            registry.close_all(CloseReason::Drain);
            let _ = tokio::time::timeout(CUT_GRACE, registry.wait_empty()).await;
        }
        for mut task in std::mem::take(&mut self.listeners) {
            // The HBONE server ends once its (now idle) connections close; bounded anyway.
            if tokio::time::timeout(CUT_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        if let Some(recheck) = self.recheck.take() {
            recheck.abort();
        }
        debug!(pod = %self.shared.ctx.name, "pod proxy drained");
    }

    /// Number of live connections (for `/config_dump` and tests).
    pub fn active_connections(&self) -> usize {
        self.shared.registry.len()
    }
}

impl Drop for PodProxy {
    fn drop(&mut self) {
        // Dropped without a drain: stop accepting; live connections run to their end.
        let _ = self.shutdown.send(true);
        if let Some(recheck) = self.recheck.take() {
            recheck.abort();
        }
    }
}

/// The pod's identity, with Istio's defaults for an empty trust domain or service account.
fn pod_identity(context: &PodContext) -> io::Result<Identity> {
    identity_of(
        &context.trust_domain,
        &context.namespace,
        &context.service_account,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Re-evaluates live inbound connections whenever an authorization decision may have changed.
async fn recheck_on_changes(shared: Arc<Shared>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let closed = shared.registry.recheck(&shared.ctx.state);
        if closed > 0 {
            debug!(pod = %shared.ctx.name, closed, "policy change closed connections");
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` yields is dropped at once: it must not live across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accepts connections on `listener` until `stop` turns true, handing each (with the client's
/// canonical address) to `accepted`, which must not block.
pub(crate) async fn accept_until_stopped(
    listener: &TcpListener,
    mut stop: watch::Receiver<bool>,
    listener_name: &str,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            result = listener.accept() => match result {
                Ok((stream, peer)) => accepted(stream, socket::canonical(peer)),
                Err(e) => {
                    // Typically out of descriptors: back off rather than spin.
                    warn!(error = %e, listener = listener_name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Connects to `addr` from inside the pod (from `source` when given), giving up after
/// [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_upstream(
    netns: &PodNetns,
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, socket::connect(netns, addr, source)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ProxyError::Connect { addr, source }),
        Err(_elapsed) => Err(ProxyError::Connect {
            addr,
            source: io::ErrorKind::TimedOut.into(),
        }),
    }
}

/// Whether `destination` is one of this proxy's own listeners.
pub(crate) fn is_own_port(destination: SocketAddr) -> bool {
    OWN_PORTS.contains(&destination.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_istio_statuses_and_flags() {
        let mismatch = ProxyError::AuthorityMismatch("10.0.0.9:80".parse().unwrap());
        assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
        let denied = ProxyError::Denied("shop/deny".into());
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(denied.response_flag(), "DENY");
        let connect = ProxyError::Connect {
            addr: "10.0.0.9:80".parse().unwrap(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(connect.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(connect.response_flag(), "CONNECT");
        assert_eq!(
            ProxyError::SelfCall(15001).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let refused = ProxyError::Hbone(hbone::Error::Status(StatusCode::UNAUTHORIZED));
        assert_eq!(refused.response_flag(), "DENY");
        assert!(is_own_port("10.0.0.1:15008".parse().unwrap()));
        assert!(!is_own_port("10.0.0.1:8080".parse().unwrap()));
    }
}
