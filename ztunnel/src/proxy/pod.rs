//! A running pod proxy: its three listeners, live connections and drain.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hbone::Identity;
use proxy_core::connections::{CloseReason, LiveConnections};
use proxy_core::state::identity_of;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::context::{PodContext, Shared};
use super::ports::{INBOUND_HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};
use super::{inbound, outbound, passthrough, socket};

/// How long cut connections and stopped tasks get to wind down after the drain deadline.
const CUT_GRACE: Duration = Duration::from_secs(5);

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
        let pool = hbone::Pool::new(hbone::PoolSettings {
            socket_factory: Some(hbone::SocketFactory::new(move |peer| {
                socket::upstream_socket(&factory_netns, peer, None)
            })),
            ..hbone::PoolSettings::default()
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
