//! The HBONE listener: presents the waypoint's own certificate, follows its rotations, puts
//! the inbound settings' limits on every peer, and drains on shutdown (GOAWAY on every
//! connection; tunnels get the drain deadline to finish).

use std::sync::Arc;
use std::time::Duration;

use hbone::{DrainReport, Identity, Server, TlsUpdater, WorkloadCertificate};
use proxy_core::identity::CertManager;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::inbound::Inbound;

/// Pause between attempts to obtain the first certificate.
const CERT_RETRY: Duration = Duration::from_secs(1);

/// Why the HBONE listener could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Shutdown came before the first certificate.
    #[error("stopped before the waypoint had a certificate")]
    StoppedEarly,
}

/// Waits for the waypoint's certificate, then serves HBONE on `listener` with `inbound`
/// until `shutdown` turns true, then drains for at most `drain_deadline`.
pub async fn serve_hbone(
    inbound: Inbound,
    certs: Arc<CertManager>,
    identity: Identity,
    listener: TcpListener,
    drain_deadline: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<DrainReport, ServeError> {
    let config = tokio::select! {
        config = first_config(&certs, &identity) => config,
        () = stopped(&mut shutdown) => return Err(ServeError::StoppedEarly),
    };
    let (limits, counters) = inbound.hbone_limits();
    let (server, updater) = Server::with_limits(config, inbound, drain_deadline, limits, counters);
    let rotation = tokio::spawn(follow_rotation(certs, identity.clone(), updater));
    tracing::info!(%identity, address = ?listener.local_addr().ok(), "HBONE listener serving");
    let report = server
        .run(listener, async move { stopped(&mut shutdown).await })
        .await;
    rotation.abort();
    tracing::info!(
        drained = report.drained,
        aborted = report.aborted,
        "HBONE listener drained"
    );
    Ok(report)
}

/// The TLS configuration of the first usable certificate, retrying until there is one.
async fn first_config(certs: &CertManager, identity: &Identity) -> Arc<ServerConfig> {
    loop {
        match certs.fetch(identity).await {
            Ok(cert) => {
                if let Some(config) = server_config(&cert) {
                    return config;
                }
            }
            Err(e) => {
                tracing::warn!(%identity, error = %e, "no certificate yet; HBONE waits");
            }
        }
        tokio::time::sleep(CERT_RETRY).await;
    }
}

fn server_config(cert: &WorkloadCertificate) -> Option<Arc<ServerConfig>> {
    match hbone::tls::server_config(cert) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            tracing::warn!(identity = %cert.identity(), error = %e, "unusable certificate");
            None
        }
    }
}

/// Pushes every rotated certificate to the server; established connections keep theirs.
async fn follow_rotation(certs: Arc<CertManager>, identity: Identity, updater: TlsUpdater) {
    let mut rotations = certs.watch(&identity);
    while rotations.changed().await.is_ok() {
        let cert = rotations.borrow_and_update().clone();
        if let Some(config) = cert.as_deref().and_then(server_config) {
            tracing::info!(%identity, "HBONE certificate rotated");
            updater.update(config);
        }
    }
}

/// Resolves once `shutdown` is true or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
