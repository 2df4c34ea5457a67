//! The proxy's HTTP endpoints: `/config_dump` on localhost 15000 (no private keys), `/metrics`
//! on 15020 and `/healthz/ready` on 15021.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::identity::CertManager;
use crate::readiness::Readiness;
use crate::state::ProxyState;
use crate::telemetry::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminContext {
    /// Config.
    pub state: ProxyState,
    /// Certificates.
    pub certs: Arc<CertManager>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness conditions.
    pub readiness: Readiness,
    /// Extra JSON sections for `/config_dump` (for example the captured pods).
    pub extra_dump: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

/// Addresses of the three endpoints.
#[derive(Clone, Copy, Debug)]
pub struct AdminAddresses {
    /// `/config_dump`.
    pub admin: SocketAddr,
    /// `/metrics`.
    pub metrics: SocketAddr,
    /// `/healthz/ready`.
    pub ready: SocketAddr,
}

/// Binds the three endpoints and serves them until `shutdown` fires.
pub async fn serve(
    addresses: AdminAddresses,
    context: AdminContext,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = (addresses, context, shutdown);
    todo!()
}
