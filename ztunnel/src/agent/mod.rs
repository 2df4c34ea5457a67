//! The node agent: learns which pods on its node are enrolled (HBONE workloads from the
//! controller), finds each pod's network namespace, installs the in-pod redirection rules
//! inside it (the istio-cni in-pod contract) and hands the namespace to the proxy over ZDS.
//! Removing a pod from the mesh removes its rules and tells the proxy to let go.
//!
//! - [`enrollment`]: the feed of this node's pods and the loop capturing and releasing them;
//! - [`netns`]: finding a pod's namespace (a folder of namespace files, or `/proc`) and
//!   running commands inside one;
//! - [`iptables`]: the rules and policy routing, rendered as text and applied atomically;
//! - `server`: the ZDS server, its proxy sessions and snapshots;
//! - [`host_rules`]: the node's own rule SNATing its health probes of captured pods to the
//!   address the in-pod rules let through;
//! - [`metrics`]: the agent's own `/metrics` (`--metrics-addr`): the probe rule's failures
//!   and coverage;
//! - [`preflight`]: whether this host can capture pods, tried in a throwaway namespace;
//! - [`cni`]: capture at pod creation, asked by the chained CNI plugin over a second socket
//!   (`--cni-socket`), and the plugin's place in the node's CNI configuration.
//! - [`uninstall`] (with [`kube_api`]): whether a stop is the mesh leaving the node.
//!
//! Stopping the agent leaves every in-pod rule in place, as istio-cni does: captured pods
//! stay captured (the proxy keeps serving them) across an agent restart or upgrade, and the
//! next agent reinstalls the same rules idempotently and sends the proxy a fresh snapshot.
//! The node's probe rule stays too, for the pods that stay captured. Only when its own
//! DaemonSet is gone or being deleted (an uninstall) does a stopping agent release every pod
//! and remove the probe rule.

pub mod cni;
mod duties;
pub mod enrollment;
pub mod host_rules;
pub mod host_variant;
pub mod iptables;
pub mod kube_api;
pub mod metrics;
pub mod netns;
mod pod;
pub mod preflight;
mod server;
pub mod uninstall;

pub use duties::NodeDuties;
pub use netns::NetnsSource;
pub use pod::{NodePod, node_pods};
pub use server::ACK_TIMEOUT;

use tokio::sync::watch;

use crate::settings::AgentSettings;
use crate::zds::ZdsListener;
use proxy_core::state::ProxyState;
use proxy_core::xds::{self, ClientIdentity};

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The ZDS socket could not be served.
    #[error("ZDS socket {path}: {source}")]
    Zds {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The node's network namespace (for the probe rule) could not be opened.
    #[error(transparent)]
    HostNetns(#[from] netns::NetnsError),
    /// The metrics endpoint could not be bound.
    #[error(transparent)]
    Metrics(#[from] std::io::Error),
    /// The CNI socket could not be served.
    #[error("CNI socket {path}: {source}")]
    Cni {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The plugin could not be put into the node's CNI configuration.
    #[error("installing the CNI plugin: {0}")]
    CniInstall(#[from] cni::install::InstallError),
}

/// The feed of this node's pods: `None` until the first complete view.
pub type PodFeed = watch::Receiver<Option<Vec<NodePod>>>;

/// Runs the agent until `shutdown` fires.
pub async fn run(
    config: AgentSettings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let listener = ZdsListener::bind(&config.zds_socket).map_err(|source| AgentError::Zds {
        path: config.zds_socket.display().to_string(),
        source,
    })?;
    tracing::info!(socket = %config.zds_socket.display(), node = %config.node, "node agent serving ZDS");

    let state = ProxyState::new();
    let xds = tokio::spawn(xds::run(
        config.control.clone(),
        client_identity(&config.node),
        state.clone(),
        shutdown.clone(),
    ));
    let (feed_tx, feed) = watch::channel(None);
    let feeder = tokio::spawn(enrollment::feed_from_state(
        state,
        config.node.clone(),
        feed_tx,
        shutdown.clone(),
    ));
    let source = NetnsSource::from_config(config.netns_dir.as_deref());
    let counters = std::sync::Arc::new(metrics::AgentMetrics::default());
    let metrics = counters.clone();
    let endpoint = match config.metrics_addr {
        Some(addr) => {
            let listener = metrics::bind(addr).await?;
            tracing::info!(%addr, "node agent metrics at /metrics");
            Some(tokio::spawn(metrics::serve(
                listener,
                counters.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let host = match &config.host_netns {
        Some(path) => {
            let netns = netns::Netns::open(path)?;
            tracing::info!(netns = %path.display(), "keeping the node's probe SNAT rule");
            Some(host_rules::HostRules::new(netns.into_fd(), counters))
        }
        None => None,
    };
    let cni_listener = match &config.cni_socket {
        Some(path) => {
            let listener = cni::server::bind(path).map_err(|source| AgentError::Cni {
                path: path.display().to_string(),
                source,
            })?;
            tracing::info!(socket = %path.display(), "node agent serving the CNI plugin");
            Some(listener)
        }
        None => None,
    };
    if let (Some(install), Some(socket)) = (&config.cni_install, &config.cni_socket) {
        // After the socket is bound: a runtime may run the plugin as soon as it is listed.
        let entry = cni::install::PluginEntry {
            agent_socket: socket.clone(),
            exclude_namespaces: install.exclude_namespaces.clone(),
        };
        let file =
            cni::install::install(&install.plugin, &install.bin_dir, &install.conf_dir, &entry)?;
        tracing::info!(config = %file.display(), "CNI plugin chained into the node's network");
    }
    let duties = NodeDuties {
        host,
        uninstall: config.uninstall.clone(),
        cni: cni_listener,
        cni_install: config.cni_install.clone(),
        metrics,
    };
    serve_with(listener, source, duties, feed, shutdown).await;
    if let Some(endpoint) = endpoint {
        let _ = endpoint.await;
    }
    let _ = feeder.await;
    let _ = xds.await;
    Ok(())
}

/// The agent without its controller: captures what `feed` enrolls, finding namespaces in
/// `source`, and serves proxies on `listener` until `shutdown` fires. Rules stay in place
/// when it returns.
pub async fn serve(
    listener: ZdsListener,
    source: NetnsSource,
    feed: PodFeed,
    shutdown: watch::Receiver<bool>,
) {
    serve_with(listener, source, NodeDuties::default(), feed, shutdown).await
}

/// [`serve`], also doing the node's `duties`: keeping the probe rule (left in place when it
/// returns, but for an uninstall), answering the CNI plugin.
pub async fn serve_with(
    listener: ZdsListener,
    source: NetnsSource,
    mut duties: NodeDuties,
    feed: PodFeed,
    shutdown: watch::Receiver<bool>,
) {
    let hub = server::Hub::new();
    let (events, cni_task) = match duties.cni.take() {
        Some(listener) => {
            // Room for every request the socket serves at once.
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let task = tokio::spawn(cni::server::serve(
                listener,
                feed.clone(),
                tx,
                duties.metrics.clone(),
                shutdown.clone(),
            ));
            (Some(rx), Some(task))
        }
        None => (None, None),
    };
    let mut enroll = tokio::spawn(enrollment::run(
        source,
        hub.clone(),
        duties,
        feed,
        events,
        shutdown.clone(),
    ));
    tokio::select! {
        _ = server::serve_sessions(listener, hub, shutdown) => {}
        // Only a panic ends enrollment before shutdown; the sessions loop sees shutdown too.
        _ = &mut enroll => {}
    }
    if !enroll.is_finished() {
        let _ = enroll.await;
    }
    if let Some(task) = cni_task {
        let _ = task.await;
    }
}

/// How the agent names itself to the controller, Istio style
/// (`<role>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`), from the downward-API
/// variables the DaemonSet sets (`POD_IP`, `POD_NAME`, `POD_NAMESPACE`, `CLUSTER_ID`).
fn client_identity(node: &str) -> ClientIdentity {
    let env = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let ip = env("POD_IP", "0.0.0.0");
    let pod = env("POD_NAME", &format!("ztunnel-{node}"));
    let namespace = env("POD_NAMESPACE", "istio-system");
    ClientIdentity {
        node_id: format!("node-agent~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"),
        node_name: node.to_string(),
        cluster_id: env("CLUSTER_ID", "Kubernetes"),
    }
}
