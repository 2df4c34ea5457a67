//! The delta ADS client: subscribes to workloads/services and authorizations, applies them to
//! the [`ProxyState`], ACKs or NACKs each response, and reconnects with backoff, sending the
//! versions it holds so the controller sends only what changed. The state is kept while the
//! controller is unreachable.

use crate::config::ControlPlaneConfig;
use crate::state::ProxyState;

/// Identifies this client to the controller (`Node.id` and metadata).
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// `Node.id`, Istio style: `<role>~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`.
    pub node_id: String,
    /// The Kubernetes node name (`NODE_NAME` metadata).
    pub node_name: String,
    /// Cluster id metadata.
    pub cluster_id: String,
}

/// Runs the client until `shutdown` fires; never returns early on controller errors
/// (it reconnects).
pub async fn run(
    control: ControlPlaneConfig,
    client: ClientIdentity,
    state: ProxyState,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let _ = (control, client, state, shutdown);
    todo!("xds::run")
}
