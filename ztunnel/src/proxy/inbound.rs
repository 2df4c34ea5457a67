//! Inbound HBONE (15008): mTLS tunnels from peer ztunnels and waypoints, each CONNECT
//! checked (authority, authorization) and connected to the app from the client's IP before it
//! is answered 200. The server puts the proxy's [`hbone::ServerLimits`] on every peer and
//! counts what they end in the `hbone` listener's series of the proxy's metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hbone::{ConnectHandler, IncomingConnect, Server, TlsUpdater, WorkloadCertificate};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::context::{Finished, Shared};
use super::error::ProxyError;
use super::listen::{connect_upstream, stopped};
use super::ports::is_own_port;
use super::resolve::is_waypoint_of;
use super::socket::canonical;
use proxy_core::connections::{AuthzInputs, Relayed, relay};
use proxy_core::labels::{Peer, connection_labels, guess_service};
use proxy_core::state::{Decision, Workload};
use proxy_core::telemetry::{HBONE_LISTENER, Reporter};

/// The HBONE server's own drain bound: longer than any drain, which cuts connections
/// itself at its deadline (the server is built before that deadline is known).
const SERVER_DRAIN_BOUND: Duration = Duration::from_secs(3600);
/// Pause between attempts to get the pod's first certificate.
const CERT_RETRY: Duration = Duration::from_secs(1);

/// Waits for the pod's certificate, then serves HBONE on `listener` until `stop` turns
/// true, following certificate rotations.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let config = tokio::select! {
        () = stopped(&mut stop) => return,
        config = first_config(&shared) => config,
    };
    let (server, updater) = Server::with_limits(
        config,
        Handler {
            shared: shared.clone(),
        },
        SERVER_DRAIN_BOUND,
        shared.ctx.limits.clone(),
        shared.ctx.metrics.connection_limits(HBONE_LISTENER),
    );
    let rotation = tokio::spawn(follow_rotation(shared.clone(), updater));
    let report = server
        .run(listener, async move { stopped(&mut stop).await })
        .await;
    rotation.abort();
    debug!(pod = %shared.ctx.name, ?report, "HBONE listener closed");
}

/// The TLS configuration of the pod's first certificate, retrying until there is one.
async fn first_config(shared: &Shared) -> Arc<ServerConfig> {
    loop {
        match shared.ctx.certs.fetch(&shared.identity).await {
            Ok(cert) => {
                if let Some(config) = server_config(&cert) {
                    return config;
                }
            }
            Err(e) => {
                warn!(identity = %shared.identity, error = %e, "no certificate yet; inbound HBONE waits");
            }
        }
        tokio::time::sleep(CERT_RETRY).await;
    }
}

fn server_config(cert: &WorkloadCertificate) -> Option<Arc<ServerConfig>> {
    match hbone::tls::server_config(cert) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            warn!(identity = %cert.identity(), error = %e, "unusable certificate");
            None
        }
    }
}

/// Pushes each rotated certificate to the server; connections already up keep theirs.
async fn follow_rotation(shared: Arc<Shared>, updater: TlsUpdater) {
    let mut certs = shared.ctx.certs.watch(&shared.identity);
    while certs.changed().await.is_ok() {
        let cert = certs.borrow_and_update().clone();
        if let Some(config) = cert.as_deref().and_then(server_config) {
            debug!(identity = %shared.identity, "inbound HBONE certificate rotated");
            updater.update(config);
        }
    }
}

struct Handler {
    shared: Arc<Shared>,
}

impl ConnectHandler for Handler {
    fn handle(&self, connect: IncomingConnect) -> impl Future<Output = ()> + Send {
        handle(self.shared.clone(), connect)
    }
}

async fn handle(shared: Arc<Shared>, connect: IncomingConnect) {
    let start = Instant::now();
    let client = canonical(connect.peer_addr);
    let authority = canonical(connect.authority);
    let Some(workload) = shared.local_workload(Some(canonical(connect.local_addr).ip())) else {
        early_reject(connect, client, ProxyError::UnknownWorkload);
        return;
    };
    // Only this pod may be asked for: anything else would make us a confused deputy that
    // reaches, from inside this pod, whatever the peer names.
    if !workload.addresses.contains(&authority.ip()) {
        early_reject(connect, client, ProxyError::AuthorityMismatch(authority));
        return;
    }
    if is_own_port(authority) {
        early_reject(connect, client, ProxyError::SelfCall(authority.port()));
        return;
    }
    let peer_identity = connect.peer_identity.clone();
    let original = original_client(&shared, &workload, &connect, client);
    let source = shared.ctx.state.workload_by_ip(original.ip());
    let service = guess_service(&workload, authority.port(), |ns, host| {
        shared.ctx.state.service_by_host(ns, host)
    });
    let labels = connection_labels(
        Reporter::Destination,
        Peer {
            workload: source.as_deref(),
            identity: Some(&peer_identity),
        },
        Peer {
            workload: Some(&workload),
            identity: Some(&shared.identity),
        },
        service.as_deref(),
        true,
    );
    let finished = shared.opened(labels, original, authority, start);
    // Registered before the decision, so a policy change racing with it is not missed.
    let inputs = AuthzInputs {
        source_identity: Some(peer_identity),
        source_ip: client.ip(),
        destination: workload,
        destination_port: authority.port(),
    };
    let tracked = shared.registry.register(Some(inputs.clone()));
    if let Decision::Deny(policy) = inputs.authorize(&shared.ctx.state) {
        reject(&shared, connect, finished, ProxyError::Denied(policy));
        return;
    }
    shared.allowed(&finished);
    // From the original client's address (IP_TRANSPARENT; replies come back through the
    // pod's connmark routing whoever the address belongs to).
    // Boxed: the connect's state would otherwise stay in this task, sized for it, for as long
    // as the connection lives.
    let connect_app = Box::pin(connect_upstream(
        &shared.ctx.netns,
        authority,
        Some(original.ip()),
    ));
    let app = match tracked.unless_closed(connect_app).await {
        Ok(Ok(app)) => app,
        Ok(Err(error)) => {
            reject(&shared, connect, finished, error);
            return;
        }
        Err(cut) => {
            connect.reject(http::StatusCode::SERVICE_UNAVAILABLE);
            shared.record(finished, Relayed::cut(cut));
            return;
        }
    };
    let tunnel = match connect.accept() {
        Ok(tunnel) => tunnel,
        Err(e) => {
            shared.record_failure(finished, &ProxyError::Hbone(e));
            return;
        }
    };
    let relayed = relay(tunnel, app, &tracked).await;
    shared.record(finished, relayed);
}

/// The connection's original client. Through a waypoint the peer is the waypoint, which
/// names the original client in `forwarded`; that is trusted from the destination's own
/// waypoints only (as Istio does). The app then sees, and telemetry reports, the original
/// client; authorization stays with the authenticated peer. A header naming the peer itself
/// (what ztunnels send) says nothing new, so the waypoint lookup is left out for it.
fn original_client(
    shared: &Shared,
    destination: &Workload,
    connect: &IncomingConnect,
    client: SocketAddr,
) -> SocketAddr {
    match hbone::forwarded::client(&connect.headers) {
        Some(fwd)
            if fwd.ip() != client.ip()
                && is_waypoint_of(
                    &shared.ctx.state,
                    destination,
                    &connect.peer_identity,
                    client.ip(),
                ) =>
        {
            // Port 0: the waypoint knew only the IP.
            let port = if fwd.port() == 0 {
                client.port()
            } else {
                fwd.port()
            };
            SocketAddr::new(fwd.ip(), port)
        }
        _ => client,
    }
}

/// Refuses a CONNECT that never became a connection (no metrics, as Istio's early denies).
fn early_reject(connect: IncomingConnect, client: SocketAddr, error: ProxyError) {
    info!(%client, authority = %connect.authority, error = %error, "inbound HBONE refused");
    connect.reject(error.status());
}

fn reject(shared: &Shared, connect: IncomingConnect, finished: Finished, error: ProxyError) {
    info!(
        client = %finished.source,
        authority = %finished.destination,
        identity = %connect.peer_identity,
        error = %error,
        "inbound HBONE refused"
    );
    connect.reject(error.status());
    shared.record_failure(finished, &error);
}
