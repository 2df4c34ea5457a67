//! Wiring of the waypoint: controller channel, its own certificate, xDS (workloads and
//! services for endpoints, plus its own `Waypoint` config), the HBONE listener, the admin
//! endpoints; SIGTERM drains.
//!
//! Start-up order: signal handlers, the listeners (a taken port is a start-up error), the
//! controller channel (retried until it answers), certificates, xDS, admin, then HBONE once
//! the certificate is there. Ready (`/healthz/ready`) once workloads are synced, the first
//! waypoint config is in force and the certificate is valid. On SIGTERM/SIGINT the waypoint
//! reports not ready, sends GOAWAY on every HBONE connection and closes HTTP connections
//! after their current requests, waits for in-flight work up to the drain deadline, then
//! stops xDS and the admin endpoints.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hbone::Identity;
use proxy_core::admin::{self, AdminContext, AdminExtensions, AdminListeners};
use proxy_core::config::{ControlPlaneConfig, MeshProxyConfig};
use proxy_core::control::ControlPlane;
use proxy_core::identity::{CaClient, CertManager, CertSettings};
use proxy_core::readiness::Readiness;
use proxy_core::shutdown::ShutdownSignals;
use proxy_core::state::ProxyState;
use proxy_core::telemetry::Metrics;
use proxy_core::xds::{self, ClientIdentity};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::engine::Runtime;
use crate::transport::{
    ConfigStore, HboneUpstream, Inbound, InboundSettings, UpstreamSettings, serve_hbone,
};

/// Certificate requests in flight at once: the waypoint has a single identity.
const MAX_CSRS_IN_FLIGHT: usize = 2;
/// Largest token file read when looking for the service account in it.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Settings of the waypoint, filled from the command line by the binary.
#[derive(Clone, Debug)]
pub struct WaypointSettings {
    /// Namespace of the waypoint's Gateway.
    pub namespace: String,
    /// Name of the waypoint's Gateway.
    pub name: String,
    /// Service account the waypoint runs as (its identity).
    pub service_account: String,
    /// The controller.
    pub control: ControlPlaneConfig,
    /// HBONE listener (15008).
    pub hbone_addr: SocketAddr,
    /// Mesh, endpoints, certificate and shutdown.
    pub mesh: MeshProxyConfig,
}

/// Why the waypoint stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Start-up failed.
    #[error("{0}")]
    Start(String),
    /// A component failed while running.
    #[error("{0}")]
    Failed(String),
}

/// The waypoint's listening sockets, bound before anything else starts (a taken port is a
/// start-up error, not something to retry).
pub struct Listeners {
    /// HBONE.
    pub hbone: TcpListener,
    /// `/config_dump`, `/metrics`, `/healthz/ready`.
    pub admin: AdminListeners,
}

impl Listeners {
    /// Binds the addresses of `config`.
    pub async fn bind(config: &WaypointSettings) -> Result<Self, AppError> {
        let hbone = TcpListener::bind(config.hbone_addr)
            .await
            .map_err(|e| AppError::Start(format!("binding HBONE on {}: {e}", config.hbone_addr)))?;
        let admin = AdminListeners::bind(config.mesh.endpoints)
            .await
            .map_err(|e| AppError::Start(format!("admin endpoints: {e}")))?;
        Ok(Self { hbone, admin })
    }
}

/// Runs the waypoint until SIGTERM/SIGINT, then drains.
pub async fn run(config: WaypointSettings) -> Result<(), AppError> {
    let mut signals = ShutdownSignals::install()
        .map_err(|e| AppError::Start(format!("installing signal handlers: {e}")))?;
    let listeners = Listeners::bind(&config).await?;
    serve(config, listeners, async move { signals.recv().await }).await
}

/// Runs the waypoint on `listeners` until `shutdown` completes, then drains.
pub async fn serve(
    config: WaypointSettings,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let identity = Identity::new(
        &config.mesh.trust_domain,
        &config.namespace,
        &config.service_account,
    )
    .map_err(|e| AppError::Start(format!("the waypoint identity: {e}")))?;
    let Listeners {
        hbone: hbone_listener,
        admin: admin_listeners,
    } = listeners;

    let control = tokio::select! {
        control = ControlPlane::connect_retrying(&config.control) => control,
        () = &mut shutdown => {
            tracing::info!("stopping before the controller was reached");
            return Ok(());
        }
    };

    let readiness = Readiness::new();
    let state = ProxyState::new();
    let metrics = Metrics::for_component("waypoint");
    let runtime = Runtime::new();
    // The waypoint is its own workload: it asks for its own identity, never impersonating.
    let certs = CertManager::with_signer(
        Arc::new(CaClient::own_identity(control)),
        CertSettings {
            ttl: config.mesh.cert_ttl,
            max_in_flight: MAX_CSRS_IN_FLIGHT,
        },
    );
    certs.prefetch(&identity);
    let store = ConfigStore::new(&config.namespace, &config.name, runtime.clone(), &readiness)
        .map_err(|e| AppError::Start(format!("the empty waypoint config: {e}")))?;

    // xDS and HBONE stop first; the admin endpoints last, so readiness stays observable.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);

    let xds_task = tokio::spawn(xds::run_with(
        config.control.clone(),
        client_identity(&config),
        state.clone(),
        vec![store.subscription()],
        stop_rx,
    ));

    let upstream = HboneUpstream::new(
        state.clone(),
        certs.clone(),
        identity.clone(),
        UpstreamSettings::default(),
    );
    let inbound = Inbound::new(
        store.clone(),
        upstream,
        metrics.clone(),
        InboundSettings {
            limits: config.mesh.limits.clone(),
            ..InboundSettings::default()
        },
        drain_rx.clone(),
    );
    let mut hbone_task = tokio::spawn(serve_hbone(
        inbound,
        certs.clone(),
        identity.clone(),
        hbone_listener,
        config.mesh.drain_deadline,
        drain_rx,
    ));

    let dump_store = store.clone();
    let context = AdminContext {
        state,
        certs,
        metrics,
        readiness: readiness.clone(),
        extra_dump: Arc::new(move || serde_json::json!({ "waypoint": dump_store.dump() })),
    };
    let metrics_runtime = runtime.clone();
    let extensions = AdminExtensions {
        extra_metrics: Some(Arc::new(move || metrics_runtime.render_metrics())),
    };
    let mut admin_task = tokio::spawn(admin::serve_listeners_with(
        admin_listeners,
        context,
        extensions,
        admin_stop_rx,
    ));
    tracing::info!(
        waypoint = %store.resource_name(), %identity, hbone = %config.hbone_addr,
        "waypoint started"
    );

    let mut hbone_done = false;
    let mut admin_done = false;
    let outcome = tokio::select! {
        () = &mut shutdown => Ok(()),
        served = &mut admin_task => {
            admin_done = true;
            Err(AppError::Failed(format!("admin endpoints stopped: {}", outcome_of(served))))
        }
        served = &mut hbone_task => {
            hbone_done = true;
            Err(AppError::Failed(format!("HBONE listener stopped: {}", outcome_of(served.map(|r| r.map(|_| ()))))))
        }
    };
    if let Err(e) = &outcome {
        tracing::error!("{e}");
    }

    tracing::info!(deadline = ?config.mesh.drain_deadline, "draining");
    let _draining = readiness.block("draining");
    let _ = drain_tx.send(true);
    if !hbone_done {
        match hbone_task.await {
            Ok(Ok(_report)) => {}
            Ok(Err(e)) => tracing::info!("{e}"),
            Err(e) => tracing::error!("the HBONE listener failed: {e}"),
        }
    }
    let _ = stop_tx.send(true);
    if let Err(e) = xds_task.await {
        tracing::error!("the xDS client failed: {e}");
    }
    let _ = admin_stop_tx.send(true);
    if !admin_done && let Err(e) = admin_task.await {
        tracing::warn!("admin endpoints: {e}");
    }
    tracing::info!("drained");
    outcome
}

/// Describes how a task that should run forever ended.
fn outcome_of<E: std::fmt::Display>(
    joined: Result<Result<(), E>, tokio::task::JoinError>,
) -> String {
    match joined {
        Ok(Ok(())) => "stopped unexpectedly".into(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    }
}

/// How the waypoint names itself to the controller, as an Istio waypoint (Envoy's "router"
/// role): `router~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`, from the downward
/// API variables Istio's proxies read, with defaults for running outside Kubernetes.
fn client_identity(config: &WaypointSettings) -> ClientIdentity {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let pod = env("POD_NAME").unwrap_or_else(|| config.name.clone());
    let ip = env("INSTANCE_IP").unwrap_or_else(|| config.hbone_addr.ip().to_string());
    let ns = &config.namespace;
    ClientIdentity {
        node_id: format!("router~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"),
        node_name: env("NODE_NAME").unwrap_or_default(),
        cluster_id: config.mesh.cluster_id.clone(),
    }
}

/// The service account a Kubernetes service account token (a JWT) was issued for, if its
/// `sub` claim names one in `namespace` (`system:serviceaccount:<ns>:<sa>`). The signature
/// is not checked: the controller checks the token; this only picks the identity to ask for.
pub fn service_account_from_token(path: &Path, namespace: &str) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_TOKEN_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let payload = text.trim().split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    let subject = claims.get("sub")?.as_str()?;
    let rest = subject.strip_prefix("system:serviceaccount:")?;
    let (ns, sa) = rest.split_once(':')?;
    (ns == namespace && !sa.is_empty()).then(|| sa.to_owned())
}

/// Decodes unpadded (or padded) base64url, as JWT segments are written.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_known_values() {
        assert_eq!(base64url_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64url_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url_decode("a+b").is_none());
    }

    #[test]
    fn service_account_comes_from_the_token_subject() {
        let dir = std::env::temp_dir().join(format!(
            "waypoint-token-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        // {"sub":"system:serviceaccount:shop:waypoint"}
        let payload = "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3YXlwb2ludCJ9";
        std::fs::write(&path, format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig\n")).unwrap();
        assert_eq!(
            service_account_from_token(&path, "shop").as_deref(),
            Some("waypoint")
        );
        assert_eq!(service_account_from_token(&path, "other"), None);
        std::fs::write(&path, "opaque-sandbox-token").unwrap();
        assert_eq!(service_account_from_token(&path, "shop"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_id_has_the_router_shape() {
        let config = WaypointSettings {
            namespace: "shop".into(),
            name: "waypoint".into(),
            service_account: "waypoint".into(),
            control: ControlPlaneConfig {
                address: "127.0.0.1:15012".into(),
                root_cert: "/nonexistent".into(),
                token_file: None,
                server_identity: "spiffe://cluster.local/ns/istio-system/sa/controller".into(),
            },
            hbone_addr: "10.0.0.9:15008".parse().unwrap(),
            mesh: MeshProxyConfig {
                cluster_id: "Kubernetes".into(),
                trust_domain: "cluster.local".into(),
                endpoints: proxy_core::config::AdminAddresses {
                    admin: "127.0.0.1:15000".parse().unwrap(),
                    metrics: "0.0.0.0:15020".parse().unwrap(),
                    ready: "0.0.0.0:15021".parse().unwrap(),
                },
                cert_ttl: std::time::Duration::from_secs(3600),
                drain_deadline: std::time::Duration::from_secs(30),
                limits: hbone::ServerLimits::default(),
            },
        };
        let id = client_identity(&config);
        assert!(id.node_id.starts_with("router~"), "{}", id.node_id);
        assert!(
            id.node_id.ends_with(".shop~shop.svc.cluster.local"),
            "{}",
            id.node_id
        );
        assert_eq!(id.cluster_id, "Kubernetes");
    }
}
