//! Outbound (15001): the pod's own connections, REDIRECTed here by its iptables rules, are
//! resolved from their original destination and carried over HBONE, plain TCP, or passed
//! through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hbone::{ConnectRequest, Upstream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use super::context::{Finished, Shared};
use super::error::ProxyError;
use super::listen::{accept_until_stopped, connect_upstream};
use super::ports::is_own_port;
use super::resolve::{Hop, Plan, resolve, workload_identity};
use super::socket::original_dst;
use proxy_core::connections::{Relayed, Tracked, relay};
use proxy_core::labels::{Peer, connection_labels};
use proxy_core::state::Workload;
use proxy_core::telemetry::Reporter;

/// Accepts until `stop` turns true.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: watch::Receiver<bool>) {
    accept_until_stopped(&listener, stop, "outbound", |stream, client| {
        // Registered before anything can fail, so a drain sees it.
        let tracked = shared.registry.register(None);
        tokio::spawn(handle(shared.clone(), stream, client, tracked));
    })
    .await;
    debug!(pod = %shared.ctx.name, "outbound listener closed");
}

async fn handle(shared: Arc<Shared>, stream: TcpStream, client: SocketAddr, tracked: Tracked) {
    let start = Instant::now();
    let _ = stream.set_nodelay(true);
    let destination = match original_dst(&stream) {
        Ok(destination) => destination,
        Err(e) => {
            // Not redirected: someone dialed 15001 itself. Proxying it would loop.
            debug!(%client, error = %ProxyError::OriginalDestination(e), "dropping outbound connection");
            return;
        }
    };
    if is_own_port(destination) && is_local(&shared, destination) {
        debug!(%client, %destination, "dropping outbound connection to the proxy itself");
        return;
    }
    let source = shared.local_workload(Some(client.ip()));
    let source_peer = Peer {
        workload: source.as_deref(),
        identity: Some(&shared.identity),
    };
    let plan = match resolve(&shared.ctx.state, source.as_deref(), destination) {
        Ok(plan) => plan,
        Err(e) => {
            let error = ProxyError::from(e);
            info!(%client, %destination, error = %error, "no route for outbound connection; closing");
            let labels =
                connection_labels(Reporter::Source, source_peer, Peer::default(), None, false);
            let finished = shared.opened(labels, client, destination, start);
            shared.record_failure(finished, &error);
            return;
        }
    };
    let destination_identity = plan
        .workload
        .as_deref()
        .filter(|_| plan.is_mtls())
        .and_then(|w| workload_identity(w).ok());
    let labels = connection_labels(
        Reporter::Source,
        source_peer,
        Peer {
            workload: plan.workload.as_deref(),
            identity: destination_identity.as_ref(),
        },
        plan.service.as_deref(),
        plan.is_mtls(),
    );
    let finished = shared.opened(labels, client, destination, start);
    debug!(%client, %destination, hop = ?plan.hop, "outbound connection");
    match plan.hop.clone() {
        Hop::Hbone {
            address,
            authority,
            identities,
        } => {
            let upstream = Upstream {
                address,
                identities,
                source_ip: None,
            };
            let mut request = ConnectRequest::new(authority);
            request.forwarded_for = Some(client);
            request.baggage = source.as_deref().map(baggage);
            // Boxed: the tunnel's setup (certificate, pool, maybe a TLS and HTTP/2 handshake)
            // is the largest state of this task; inline, every connection's task would keep
            // its size for as long as the connection lives.
            let opened = tracked
                .unless_closed(Box::pin(open_tunnel(&shared, &upstream, &request)))
                .await;
            match opened {
                Ok(Ok(tunnel)) => {
                    let relayed = relay(stream, tunnel, &tracked).await;
                    shared.record(finished, relayed);
                }
                Ok(Err(e)) => fail(&shared, finished, &plan, e),
                Err(cut) => shared.record(finished, Relayed::cut(cut)),
            }
        }
        Hop::Tcp { address } => {
            // Boxed for the same reason as the tunnel's setup.
            let connect = Box::pin(connect_upstream(&shared.ctx.netns, address, None));
            match tracked.unless_closed(connect).await {
                Ok(Ok(upstream)) => {
                    let relayed = relay(stream, upstream, &tracked).await;
                    shared.record(finished, relayed);
                }
                Ok(Err(e)) => fail(&shared, finished, &plan, e),
                Err(cut) => shared.record(finished, Relayed::cut(cut)),
            }
        }
    }
}

async fn open_tunnel(
    shared: &Shared,
    upstream: &Upstream,
    request: &ConnectRequest,
) -> Result<hbone::TunnelStream, ProxyError> {
    let cert = shared.ctx.certs.fetch(&shared.identity).await?;
    Ok(shared.pool.connect(&cert, upstream, request).await?)
}

fn fail(shared: &Shared, finished: Finished, plan: &Plan, error: ProxyError) {
    info!(
        client = %finished.source,
        destination = %finished.destination,
        hop = ?plan.hop,
        error = %error,
        "outbound connection failed"
    );
    shared.record_failure(finished, &error);
}

/// Whether `destination` is this pod (or loopback): where the proxy's own ports live.
fn is_local(shared: &Shared, destination: SocketAddr) -> bool {
    destination.ip().is_loopback()
        || shared
            .local_workload(None)
            .is_some_and(|w| w.addresses.contains(&destination.ip()))
}

/// Workload metadata for the peer, in Istio's `baggage` format.
fn baggage(source: &Workload) -> String {
    format!(
        "k8s.cluster.name={},k8s.namespace.name={},k8s.deployment.name={},service.name={},service.version={}",
        source.cluster_id,
        source.namespace,
        source.workload_name,
        source.canonical_name,
        source.canonical_revision,
    )
}
