//! Wiring of the proxy role: controller channel, xDS, certificates, telemetry, admin, the ZDS
//! client and the per-pod proxies; SIGTERM drains.
//!
//! Start-up order: signal handlers (a SIGTERM during start-up still exits cleanly), the
//! controller channel (retried until it works), certificates, the xDS client, the admin
//! endpoints, then, once the first xDS response is applied, the ZDS client: a proxy started
//! beside a running one (an overlapping upgrade) binds pod listeners, which share the
//! connections of their SO_REUSEPORT group from the first moment, only when it knows the mesh.
//! The admin endpoints are SO_REUSEPORT too, so that such a successor can start beside its
//! predecessor when both share a network namespace (the sandbox, a host-network pod); every
//! answer names the answering process (`x-process-id`). On SIGTERM/SIGINT the proxy reports
//! not ready, stops taking ZDS requests, drains every pod's proxy at once within
//! `drain_deadline`, then stops xDS and the admin endpoints and returns.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::inpod::{InpodClient, InpodSettings, ProxyLauncher};
use crate::settings::ProxySettings;
use proxy_core::admin::{self, AdminContext, AdminExtensions, AdminListeners};
use proxy_core::control::ControlPlane;
use proxy_core::identity::{CertManager, CertSettings};
use proxy_core::memory;
use proxy_core::readiness::Readiness;
use proxy_core::settings::AdminAddresses;
use proxy_core::shutdown::ShutdownSignals;
use proxy_core::state::ProxyState;
use proxy_core::tap::Tap;
use proxy_core::telemetry::Metrics;
use proxy_core::xds::{self, ClientIdentity};

/// Accept queue of each admin endpoint.
const ADMIN_BACKLOG: i32 = 128;
/// Most certificate requests in flight at once.
const MAX_CSRS_IN_FLIGHT: usize = 8;
/// Tapped connection events dropped because a tap client did not keep up (named like the
/// waypoint's `waypoint_tap_events_dropped_total`).
const TAP_DROPPED: &str = "ztunnel_tap_events_dropped_total";
/// Longest a deleted pod's connections may run on (bounded by the shutdown deadline too): the
/// pod is gone or leaving the mesh, so its connections are not worth holding up.
const DEL_DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Startup failed.
    #[error("{0}")]
    Start(String),
    /// The admin endpoints failed while running.
    #[error("admin endpoints: {0}")]
    Admin(String),
}

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run_proxy(config: ProxySettings) -> Result<(), ProxyError> {
    let mut signals = ShutdownSignals::install()
        .map_err(|e| ProxyError::Start(format!("installing signal handlers: {e}")))?;

    let control = tokio::select! {
        control = ControlPlane::connect_retrying(&config.control) => control,
        _ = signals.recv() => {
            tracing::info!("stopping before the controller was reached");
            return Ok(());
        }
    };

    let readiness = Readiness::new();
    let metrics = Metrics::new();
    let state = ProxyState::new();
    let tap = Arc::new(Tap::default());
    let certs = CertManager::new(
        control,
        CertSettings {
            ttl: config.mesh.cert_ttl,
            max_in_flight: MAX_CSRS_IN_FLIGHT,
        },
    );

    // xDS and the ZDS client stop first; the admin endpoints last, so readiness and
    // /config_dump stay observable while pods drain.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);

    memory::follow_load();
    let xds_task = tokio::spawn(xds::run_with(
        config.control.clone(),
        client_identity(&config),
        state.clone(),
        vec![
            certs.trust_bundle_subscription(),
            xds::access_logging_subscription(metrics.access_switch()),
        ],
        stop_rx.clone(),
    ));

    let inpod = InpodClient::new(
        InpodSettings {
            zds_socket: config.zds_socket.clone(),
            del_drain_deadline: DEL_DRAIN_DEADLINE.min(config.mesh.drain_deadline),
            drain_deadline: config.mesh.drain_deadline,
        },
        ProxyLauncher {
            node: config.node.clone(),
            trust_domain: config.mesh.trust_domain.clone(),
            state: state.clone(),
            certs: certs.clone(),
            metrics: metrics.clone(),
            limits: config.mesh.limits.clone(),
            tap: tap.clone(),
        },
        readiness.clone(),
    );

    let config_state = state.clone();
    let context = AdminContext {
        state,
        certs,
        metrics,
        readiness: readiness.clone(),
        extra_dump: inpod.dump(),
    };
    let mut admin_task = spawn_admin(config.mesh.endpoints, context, tap, admin_stop_rx);
    let inpod_task = tokio::spawn(run_inpod_once_synced(inpod, config_state, stop_rx));
    tracing::info!(node = %config.node, "proxy started");

    let (outcome, admin_done) = wait_for_stop(&mut signals, &mut admin_task).await;

    tracing::info!(deadline = ?config.mesh.drain_deadline, "draining");
    let _draining = readiness.block("draining");
    let _ = stop_tx.send(true);
    if let Err(e) = inpod_task.await {
        tracing::error!("the ZDS client failed: {e}");
    }
    if let Err(e) = xds_task.await {
        tracing::error!("the xDS client failed: {e}");
    }
    let _ = admin_stop_tx.send(true);
    if !admin_done {
        match admin_task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("admin endpoints: {e}"),
            Err(e) => tracing::warn!("admin endpoints: {e}"),
        }
    }
    tracing::info!("drained");
    outcome
}

/// Waits for a shutdown signal, or for the admin endpoints to fail (a proxy nobody can probe
/// must not run on): the run's outcome, and whether the admin task has ended.
async fn wait_for_stop(
    signals: &mut ShutdownSignals,
    admin_task: &mut tokio::task::JoinHandle<std::io::Result<()>>,
) -> (Result<(), ProxyError>, bool) {
    tokio::select! {
        _ = signals.recv() => (Ok(()), false),
        served = admin_task => {
            let reason = match served {
                Ok(Ok(())) => "stopped unexpectedly".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!("admin endpoints failed: {reason}");
            (Err(ProxyError::Admin(reason)), true)
        }
    }
}

/// Serves the admin, metrics and readiness endpoints, with `/tap`, until `stop`.
fn spawn_admin(
    endpoints: AdminAddresses,
    context: AdminContext,
    tap: Arc<Tap>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let extensions = AdminExtensions {
        extra_metrics: Some(tap_metrics(tap.clone())),
        tap: Some(tap),
    };
    tokio::spawn(async move {
        let listeners = AdminListeners {
            admin: bind_shared(endpoints.admin, "admin")?,
            metrics: bind_shared(endpoints.metrics, "metrics")?,
            ready: bind_shared(endpoints.ready, "readiness")?,
        };
        admin::serve_listeners_with(listeners, context, extensions, stop).await
    })
}

/// Binds an admin endpoint with SO_REUSEPORT: a successor in the same network namespace binds
/// beside this process instead of failing, and takes over once this one exits.
fn bind_shared(address: SocketAddr, what: &str) -> std::io::Result<tokio::net::TcpListener> {
    let bind = || {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(ADMIN_BACKLOG)?;
        tokio::net::TcpListener::from_std(socket.into())
    };
    bind().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the {what} endpoint on {address}: {e}"),
        )
    })
}

/// Waits for the first xDS response to be applied (or for shutdown), then serves the node
/// agent: pod listeners are bound only once outbound connections can be resolved.
async fn run_inpod_once_synced(
    inpod: InpodClient<ProxyLauncher>,
    state: ProxyState,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = state.changes();
    while !state.is_synced() {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    inpod.run(stop).await
}

/// `ztunnel_tap_events_dropped_total`, appended to `/metrics`.
fn tap_metrics(tap: Arc<Tap>) -> admin::ExtraMetrics {
    Arc::new(move || {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {TAP_DROPPED} Tapped connection events dropped because a tap client did \
             not keep up.\n# TYPE {TAP_DROPPED} counter\n{TAP_DROPPED} {}",
            tap.dropped_total()
        );
        out
    })
}

/// How this proxy names itself to the controller, Istio style
/// (`ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`). The pod name, namespace
/// and IP come from the downward API variables Istio's ztunnel reads, with defaults for
/// running outside Kubernetes.
fn client_identity(config: &ProxySettings) -> ClientIdentity {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let pod = env("POD_NAME").unwrap_or_else(|| format!("ztunnel-{}", config.node));
    let namespace = env("POD_NAMESPACE").unwrap_or_else(|| "istio-system".into());
    let ip = env("INSTANCE_IP").unwrap_or_else(|| "127.0.0.1".into());
    ClientIdentity {
        node_id: node_id(&ip, &pod, &namespace),
        node_name: config.node.clone(),
        cluster_id: config.mesh.cluster_id.clone(),
    }
}

fn node_id(ip: &str, pod: &str, namespace: &str) -> String {
    format!("ztunnel~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_successor_binds_the_admin_ports_beside_its_predecessor() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap(), "readiness").unwrap();
        let address = first.local_addr().unwrap();
        let second = bind_shared(address, "readiness").expect("SO_REUSEPORT shares the port");
        assert_eq!(second.local_addr().unwrap(), address);
    }

    #[test]
    fn node_id_has_istios_shape() {
        assert_eq!(
            node_id("10.0.0.5", "ztunnel-abcde", "istio-system"),
            "ztunnel~10.0.0.5~ztunnel-abcde.istio-system~istio-system.svc.cluster.local"
        );
    }
}
