//! The data path of one captured pod: outbound (15001), inbound plaintext (15006) and inbound
//! HBONE (15008) listeners inside the pod's network namespace.

pub mod netns;

use std::sync::Arc;
use std::time::Duration;

use crate::identity::CertManager;
use crate::state::ProxyState;
use crate::telemetry::Metrics;

pub use netns::PodNetns;

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
}

/// A running pod proxy: its listeners and live connections.
pub struct PodProxy {
    _private: (),
}

impl PodProxy {
    /// Binds the three listeners inside the pod's namespace (SO_REUSEPORT so an overlapping
    /// proxy can take over) and starts serving.
    pub async fn start(context: PodContext) -> std::io::Result<PodProxy> {
        let _ = context;
        todo!()
    }

    /// Stops accepting, lets live connections finish for up to `deadline`, then cuts them.
    pub async fn drain(self, deadline: Duration) {
        let _ = deadline;
        todo!()
    }

    /// Number of live connections (for `/config_dump` and tests).
    pub fn active_connections(&self) -> usize {
        todo!()
    }
}
