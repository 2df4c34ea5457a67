//! The node agent: learns which pods on its node are enrolled (HBONE workloads from the
//! controller), finds each pod's network namespace, installs the in-pod redirection rules
//! inside it (the istio-cni in-pod contract) and hands the namespace to the proxy over ZDS.
//! Removing a pod from the mesh removes its rules and tells the proxy to let go.

use crate::config::AgentConfig;

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
}

/// Runs the agent until `shutdown` fires.
pub async fn run(
    config: AgentConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let _ = (config, shutdown);
    todo!()
}
