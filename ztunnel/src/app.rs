//! Wiring of the proxy role: controller channel, xDS, certificates, telemetry, admin, the ZDS
//! client and the per-pod proxies; SIGTERM drains.

use crate::config::ProxyConfig;

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Startup failed.
    #[error("{0}")]
    Start(String),
}

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run_proxy(config: ProxyConfig) -> Result<(), ProxyError> {
    let _ = config;
    todo!()
}
