//! The real [`Launcher`]: a [`PodProxy`] per pod, with the pod's certificate kept warm while
//! it is served.

use std::sync::Arc;
use std::time::Duration;

use hbone::Identity;

use super::pod::{Launcher, PodInfo};
use crate::proxy::{PodContext, PodNetns, PodProxy};
use proxy_core::identity::CertManager;
use proxy_core::state::{ProxyState, identity_of};
use proxy_core::tap::Tap;
use proxy_core::telemetry::Metrics;

/// Starts [`PodProxy`]s with the node's shared state, certificates and telemetry.
pub struct ProxyLauncher {
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
    /// What a peer may hold on each pod's HBONE listener.
    pub limits: hbone::ServerLimits,
    /// The node's live connection events.
    pub tap: Arc<Tap>,
}

/// A served pod: its proxy and the certificate reference taken for it.
pub struct RunningPod {
    proxy: PodProxy,
    identity: Option<Identity>,
}

impl ProxyLauncher {
    /// The identity the pod's proxy presents (see [`identity_of`]), whose certificate is kept
    /// warm while the pod is served.
    fn identity(&self, pod: &PodInfo) -> Option<Identity> {
        match identity_of(&self.trust_domain, &pod.namespace, &pod.service_account) {
            Ok(identity) => Some(identity),
            Err(e) => {
                // The proxy still starts: its HBONE side simply never gets a certificate.
                tracing::warn!(uid = %pod.uid, "pod has no valid identity: {e}");
                None
            }
        }
    }
}

impl Launcher for ProxyLauncher {
    type Proxy = RunningPod;

    async fn start(&self, pod: &PodInfo, netns: Arc<PodNetns>) -> Result<RunningPod, String> {
        let identity = self.identity(pod);
        // Ask for the certificate first, so the CSR is in flight while listeners are bound.
        if let Some(identity) = &identity {
            self.certs.prefetch(identity);
        }
        let context = PodContext {
            uid: pod.uid.clone(),
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            netns,
            node: self.node.clone(),
            trust_domain: self.trust_domain.clone(),
            state: self.state.clone(),
            certs: self.certs.clone(),
            metrics: self.metrics.clone(),
            limits: self.limits.clone(),
            tap: self.tap.clone(),
        };
        match PodProxy::start(context).await {
            Ok(proxy) => Ok(RunningPod { proxy, identity }),
            Err(e) => {
                if let Some(identity) = &identity {
                    self.certs.release(identity);
                }
                Err(e.to_string())
            }
        }
    }

    async fn drain(&self, _pod: &PodInfo, running: RunningPod, deadline: Duration) {
        running.proxy.drain(deadline).await;
        if let Some(identity) = &running.identity {
            self.certs.release(identity);
        }
    }

    fn active_connections(&self, running: &RunningPod) -> usize {
        running.proxy.active_connections()
    }
}
