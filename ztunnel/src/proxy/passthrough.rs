//! Inbound plaintext (15006): connections to the pod that did not come over HBONE, delivered
//! here by the pod's redirection rules (REDIRECT, or TPROXY with the original destination as
//! the accepted socket's local address). They
//! have no peer identity, so they pass only if authorization allows that (STRICT mTLS arrives
//! as a DENY policy matching identity-less connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use super::context::Shared;
use super::error::ProxyError;
use super::listen::{accept_until_stopped, connect_upstream};
use super::ports::is_own_port;
use super::socket::{canonical, original_dst};
use proxy_core::connections::{AuthzInputs, Relayed, relay};
use proxy_core::labels::{Peer, connection_labels, guess_service};
use proxy_core::state::Decision;
use proxy_core::telemetry::Reporter;

/// Accepts until `stop` turns true.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: watch::Receiver<bool>) {
    accept_until_stopped(&listener, stop, "inbound plaintext", |stream, client| {
        tokio::spawn(handle(shared.clone(), stream, client));
    })
    .await;
    debug!(pod = %shared.ctx.name, "inbound plaintext listener closed");
}

async fn handle(shared: Arc<Shared>, stream: TcpStream, client: SocketAddr) {
    let start = Instant::now();
    let _ = stream.set_nodelay(true);
    // REDIRECT keeps the original destination in conntrack; TPROXY leaves it as the
    // socket's local address. Either contract may be installed.
    let destination = match original_dst(&stream).or_else(|_| stream.local_addr().map(canonical)) {
        Ok(addr) => addr,
        Err(e) => {
            debug!(%client, error = %e, "inbound plaintext connection without a destination");
            return;
        }
    };
    // pod:15006 asked for directly would be forwarded to pod:15006 again, forever.
    if is_own_port(destination) {
        info!(%client, %destination, error = %ProxyError::SelfCall(destination.port()), "inbound plaintext refused");
        return;
    }
    let Some(workload) = shared
        .local_workload(Some(destination.ip()))
        .filter(|w| w.addresses.contains(&destination.ip()))
    else {
        info!(%client, %destination, "inbound plaintext to an address that is not this pod's; closing");
        return;
    };
    let source = shared.ctx.state.workload_by_ip(client.ip());
    let service = guess_service(&workload, destination.port(), |ns, host| {
        shared.ctx.state.service_by_host(ns, host)
    });
    let labels = connection_labels(
        Reporter::Destination,
        Peer {
            workload: source.as_deref(),
            identity: None,
        },
        Peer {
            workload: Some(&workload),
            identity: Some(&shared.identity),
        },
        service.as_deref(),
        false,
    );
    let finished = shared.opened(labels, client, destination, start);
    let inputs = AuthzInputs {
        source_identity: None,
        source_ip: client.ip(),
        destination: workload,
        destination_port: destination.port(),
    };
    // Registered before the decision, so a policy change racing with it is not missed.
    let tracked = shared.registry.register(Some(inputs.clone()));
    if let Decision::Deny(policy) = inputs.authorize(&shared.ctx.state) {
        let error = ProxyError::Denied(policy);
        info!(%client, %destination, error = %error, "inbound plaintext refused");
        shared.record_failure(finished, &error);
        return;
    }
    shared.allowed(&finished);
    // Boxed: its state would otherwise stay in this task for the connection's life.
    let connect_app = Box::pin(connect_upstream(
        &shared.ctx.netns,
        destination,
        Some(client.ip()),
    ));
    let app = match tracked.unless_closed(connect_app).await {
        Ok(Ok(app)) => app,
        Ok(Err(error)) => {
            info!(%client, %destination, error = %error, "inbound plaintext failed");
            shared.record_failure(finished, &error);
            return;
        }
        Err(cut) => {
            shared.record(finished, Relayed::cut(cut));
            return;
        }
    };
    let relayed = relay(stream, app, &tracked).await;
    shared.record(finished, relayed);
}
