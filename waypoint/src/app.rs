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
use std::time::Duration;

use hbone::{DrainReport, Identity};
use proxy_core::admin::{self, AdminContext, AdminExtensions, AdminListeners};
use proxy_core::control::ControlPlane;
use proxy_core::identity::{CaClient, CertManager, CertSettings};
use proxy_core::memory;
use proxy_core::readiness::Readiness;
use proxy_core::settings::{ControlPlaneSettings, MeshProxySettings};
use proxy_core::shutdown::ShutdownSignals;
use proxy_core::state::ProxyState;
use proxy_core::telemetry::Metrics;
use proxy_core::xds::{self, ClientIdentity};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::engine::Runtime;
use crate::transport::{
    ConfigStore, HboneUpstream, Inbound, InboundSettings, ServeError, UpstreamSettings, serve_hbone,
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
    pub control: ControlPlaneSettings,
    /// HBONE listener (15008).
    pub hbone_addr: SocketAddr,
    /// Mesh, endpoints, certificate and shutdown.
    pub mesh: MeshProxySettings,
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

    let control = tokio::select! {
        control = ControlPlane::connect_retrying(&config.control) => control,
        () = &mut shutdown => {
            tracing::info!("stopping before the controller was reached");
            return Ok(());
        }
    };

    let core = Core::new(&config, identity, control)?;
    memory::follow_load();
    let mut running = Running::start(&config, &core, listeners);
    tracing::info!(
        waypoint = %core.store.resource_name(), identity = %core.identity,
        hbone = %config.hbone_addr, "waypoint started"
    );
    let outcome = running.until_stopped(shutdown).await;
    if let Err(e) = &outcome {
        tracing::error!("{e}");
    }
    running.drain(&core, config.mesh.drain_deadline).await;
    outcome
}

/// What the waypoint's components are built on: its identity, readiness, the mesh state, the
/// proxy's metrics, the engine's runtime state, the certificates and the config in force.
struct Core {
    identity: Identity,
    readiness: Readiness,
    state: ProxyState,
    metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
    certs: Arc<CertManager>,
    store: Arc<ConfigStore>,
}

impl Core {
    /// The waypoint's state, with its own certificate requested from the controller.
    fn new(
        config: &WaypointSettings,
        identity: Identity,
        control: ControlPlane,
    ) -> Result<Self, AppError> {
        let readiness = Readiness::new();
        let state = ProxyState::new();
        let metrics = Metrics::for_component("waypoint");
        let runtime = Runtime::new();
        runtime.set_own_identity(&identity);
        runtime.set_node_id(&client_identity(config).node_id);
        // The waypoint is its own workload: it asks for its own identity, never impersonating.
        let learned = control.learned_roots().clone();
        let certs = CertManager::with_signer_and_roots(
            Arc::new(CaClient::own_identity(control)),
            CertSettings {
                ttl: config.mesh.cert_ttl,
                max_in_flight: MAX_CSRS_IN_FLIGHT,
            },
            learned,
        );
        certs.prefetch(&identity);
        let store = ConfigStore::new(&config.namespace, &config.name, runtime.clone(), &readiness)
            .map_err(|e| AppError::Start(format!("the empty waypoint config: {e}")))?;
        Ok(Self {
            identity,
            readiness,
            state,
            metrics,
            runtime,
            certs,
            store,
        })
    }
}

/// The waypoint's tasks, and the signals that stop them.
struct Running {
    xds: JoinHandle<()>,
    hbone: JoinHandle<Result<DrainReport, ServeError>>,
    admin: JoinHandle<std::io::Result<()>>,
    /// Stops xDS.
    stop_xds: watch::Sender<bool>,
    /// Drains HBONE and HTTP connections.
    drain: watch::Sender<bool>,
    /// Stops the admin endpoints.
    stop_admin: watch::Sender<bool>,
    /// The HBONE listener has ended (its task must not be awaited again).
    hbone_done: bool,
    /// The admin endpoints have ended (their task must not be awaited again).
    admin_done: bool,
}

impl Running {
    /// Starts xDS (workloads and services, plus the waypoint's own config), the HBONE
    /// listener (serving once the certificate is there) and the admin endpoints.
    fn start(config: &WaypointSettings, core: &Core, listeners: Listeners) -> Self {
        let Listeners {
            hbone: hbone_listener,
            admin: admin_listeners,
        } = listeners;
        // xDS and HBONE stop first; the admin endpoints last, so readiness stays observable.
        let (stop_xds, stop_xds_rx) = watch::channel(false);
        let (drain, drain_rx) = watch::channel(false);
        let (stop_admin, stop_admin_rx) = watch::channel(false);

        let xds = tokio::spawn(xds::run_with(
            config.control.clone(),
            client_identity(config),
            core.state.clone(),
            vec![
                core.store.subscription(),
                core.certs.trust_bundle_subscription(),
            ],
            stop_xds_rx,
        ));

        let upstream = HboneUpstream::new(
            core.state.clone(),
            core.certs.clone(),
            core.identity.clone(),
            UpstreamSettings::default(),
        );
        let inbound = Inbound::new(
            core.store.clone(),
            upstream,
            core.metrics.clone(),
            InboundSettings {
                limits: config.mesh.limits.clone(),
                ..InboundSettings::default()
            },
            drain_rx.clone(),
        );
        let hbone = tokio::spawn(serve_hbone(
            inbound,
            core.certs.clone(),
            core.identity.clone(),
            hbone_listener,
            config.mesh.drain_deadline,
            drain_rx,
        ));

        let dump_store = core.store.clone();
        let context = AdminContext {
            state: core.state.clone(),
            certs: core.certs.clone(),
            metrics: core.metrics.clone(),
            readiness: core.readiness.clone(),
            extra_dump: Arc::new(move || serde_json::json!({ "waypoint": dump_store.dump() })),
        };
        let metrics_runtime = core.runtime.clone();
        let extensions = AdminExtensions {
            tap: Some(core.runtime.tap()),
            extra_metrics: Some(Arc::new(move || metrics_runtime.render_metrics())),
        };
        let admin = tokio::spawn(admin::serve_listeners_with(
            admin_listeners,
            context,
            extensions,
            stop_admin_rx,
        ));
        Self {
            xds,
            hbone,
            admin,
            stop_xds,
            drain,
            stop_admin,
            hbone_done: false,
            admin_done: false,
        }
    }

    /// Waits for `shutdown`, or for the HBONE listener or the admin endpoints to stop on
    /// their own (an error: they run until told to stop).
    async fn until_stopped(
        &mut self,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), AppError> {
        tokio::select! {
            () = shutdown => Ok(()),
            served = &mut self.admin => {
                self.admin_done = true;
                Err(AppError::Failed(format!("admin endpoints stopped: {}", outcome_of(served))))
            }
            served = &mut self.hbone => {
                self.hbone_done = true;
                Err(AppError::Failed(format!("HBONE listener stopped: {}", outcome_of(served.map(|r| r.map(|_| ()))))))
            }
        }
    }

    /// Drains: reports not ready, lets HBONE and HTTP connections finish within `deadline`,
    /// then stops xDS and, last, the admin endpoints.
    async fn drain(self, core: &Core, deadline: Duration) {
        tracing::info!(?deadline, "draining");
        let _draining = core.readiness.block("draining");
        let _ = self.drain.send(true);
        if !self.hbone_done {
            match self.hbone.await {
                Ok(Ok(_report)) => {}
                Ok(Err(e)) => tracing::info!("{e}"),
                Err(e) => tracing::error!("the HBONE listener failed: {e}"),
            }
        }
        let _ = self.stop_xds.send(true);
        if let Err(e) = self.xds.await {
            tracing::error!("the xDS client failed: {e}");
        }
        let _ = self.stop_admin.send(true);
        if !self.admin_done
            && let Err(e) = self.admin.await
        {
            tracing::warn!("admin endpoints: {e}");
        }
        tracing::info!("drained");
    }
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
        let dir = test_support::TempDir::new("waypoint-token");
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
    }

    #[test]
    fn node_id_has_the_router_shape() {
        let config = WaypointSettings {
            namespace: "shop".into(),
            name: "waypoint".into(),
            service_account: "waypoint".into(),
            control: ControlPlaneSettings {
                address: "127.0.0.1:15012".into(),
                root_cert: "/nonexistent".into(),
                token_file: None,
                server_identity: "spiffe://cluster.local/ns/istio-system/sa/controller".into(),
                learned_roots: Default::default(),
            },
            hbone_addr: "10.0.0.9:15008".parse().unwrap(),
            mesh: MeshProxySettings {
                cluster_id: "Kubernetes".into(),
                trust_domain: "cluster.local".into(),
                endpoints: proxy_core::settings::AdminAddresses {
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
