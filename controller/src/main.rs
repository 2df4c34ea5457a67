//! The `controller` binary: source (files, or the Kubernetes API) → index → translation →
//! delta xDS, the CA, status conditions (Kubernetes), and the admin endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use controller::admin::{self, AdminState, Readiness};
use controller::ca::auth::{Authenticator, StaticTokens, TokenFile};
use controller::ca::tokenreview::TokenReviewAuthenticator;
use controller::ca::{CaConfig, CaService, CertificateAuthority, NodeDirectory, secret_store};
use controller::deploy::{self, DeploySettings, WaypointRuntime};
use controller::model::Index;
use controller::pipeline;
use controller::server::{self, ServingTls};
use controller::source::kube::ObservedMap;
use controller::source::{FileSource, KubeSettings, KubeSource};
use controller::status;
use controller::translate::{Published, TranslateOptions, Translator};
use controller::xds::{XdsConfig, XdsServer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Control plane of the ambient mesh.
#[derive(Parser, Debug)]
#[command(
    name = "controller",
    version,
    about,
    long_about = "Control plane of the ambient mesh.\n\n\
        Reads Kubernetes objects, either from the API server (--kubernetes) or from one or \
        more folders of manifests (--config-dir, rescanned for changes), translates them into \
        Istio workload API resources (workloads, services), authorization policies and \
        waypoint routes, and streams them to ztunnels and waypoints over delta ADS (gRPC over \
        TLS on --xds-addr, port 15012). The same port serves Istio's IstioCertificateService: \
        the controller is the certificate authority issuing SPIFFE identities \
        (spiffe://<trust-domain>/ns/<ns>/sa/<sa>).\n\n\
        Local mode: the CA root is generated on first start and kept in --ca-dir (or an \
        intermediate plugged in there as ca-cert.pem, ca-key.pem, cert-chain.pem, \
        root-cert.pem); callers authenticate with bearer tokens listed in --tokens-file.\n\n\
        Kubernetes mode (--kubernetes, in-cluster config or the usual kubeconfig): the CA \
        root lives in the Secret istio-ca-secret of --root-namespace (the plug-in Secret \
        cacerts wins when present; --ca-dir overrides both); callers present service account \
        tokens (audience istio-ca) checked with TokenReview; problems found in objects are \
        written to their status conditions; every Gateway of class istio-waypoint gets its \
        waypoint (ServiceAccount, Deployment, Service, owned by the Gateway) and its status \
        address; every namespace gets the trust bundle ConfigMap istio-ca-root-cert.\n\n\
        The admin endpoint (--admin-addr, port 15014) serves /metrics, /ready and \
        /debug/config_dump (the latter only to the controller's own host, unless \
        --remote-debug)."
)]
struct Args {
    /// Folder of Kubernetes manifests (multi-document YAML); repeatable.
    #[arg(long = "config-dir", value_name = "DIR", conflicts_with = "kubernetes")]
    config_dirs: Vec<PathBuf>,
    /// Read objects from the Kubernetes API server instead of folders, authenticate callers
    /// with TokenReview and keep the CA in Secrets.
    #[arg(long)]
    kubernetes: bool,
    /// Address of the gRPC endpoint (delta xDS and CA) over TLS.
    #[arg(long, default_value = "0.0.0.0:15012")]
    xds_addr: SocketAddr,
    /// Address of the admin HTTP endpoint.
    #[arg(long, default_value = "127.0.0.1:15014")]
    admin_addr: SocketAddr,
    /// Let clients other than the controller's own host read `/debug/*` on the admin
    /// endpoint (the whole mesh configuration); `/metrics` and `/ready` answer anyone.
    #[arg(long)]
    remote_debug: bool,
    /// SPIFFE trust domain of issued identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Namespace whose policies apply mesh-wide, and where the controller and ztunnel run.
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// Cluster name used in workload uids.
    #[arg(long, default_value = "Kubernetes")]
    cluster_id: String,
    /// Folder holding the CA's root (created on first start) or a plugged-in intermediate.
    /// Without it, a root is generated in memory and lost on restart.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// YAML or JSON map of bearer token → {identity, node}; re-read when it changes.
    #[arg(long, value_name = "FILE", conflicts_with = "kubernetes")]
    tokens_file: Option<PathBuf>,
    /// Debounce window for config pushes, in milliseconds.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// How often the --config-dir folders are rescanned for changes, in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    scan_interval_ms: u64,
    /// Image of the waypoints the controller deploys for Gateways of class istio-waypoint
    /// (Kubernetes mode).
    #[arg(long, default_value = "ghcr.io/ambient-mesh/waypoint:0.1.0")]
    waypoint_image: String,
    /// Where deployed waypoints reach the controller; default `istiod.<root-namespace>.svc:15012`.
    #[arg(long, value_name = "HOST:PORT")]
    waypoint_controller_addr: Option<String>,
    /// Log filter in `tracing` syntax (for example `info` or `controller=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Errors that stop the controller at startup.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("CA: {0}")]
    Ca(#[from] controller::ca::CaError),
    #[error("invalid trust domain or namespace: {0}")]
    Identity(#[from] hbone::IdentityError),
    #[error("gRPC endpoint: {0}")]
    Server(#[from] server::ServerError),
    #[error("admin: {0}")]
    Admin(#[from] admin::AdminError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tokio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
}

/// Answers the CA's "does this node run that service account" from the live index, once the
/// first complete configuration has been translated.
struct IndexDirectory {
    index: watch::Receiver<Arc<Index>>,
    published: watch::Receiver<Published>,
}

impl NodeDirectory for IndexDirectory {
    fn has_pod(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.index
            .borrow()
            .pods_on_node(node)
            .iter()
            .any(|(ns, sa)| ns == namespace && sa == service_account)
    }

    fn loaded(&self) -> bool {
        self.published.borrow().is_some()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("controller: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), StartError> {
    let metrics = admin::install_metrics()?;
    pipeline::describe();
    let readiness = Readiness::default();

    // Config pipeline: source → index → translation → snapshot (and, from Kubernetes,
    // problems → status conditions).
    let (index_tx, index_rx) = watch::channel(Arc::new(Index::new()));
    let (snap_tx, snap_rx) = watch::channel(None);
    let (problems_tx, problems_rx) = watch::channel(None);
    let kube_client = if args.kubernetes {
        let client = kube::Client::try_default().await?;
        let (observed_tx, observed_rx) = watch::channel(Arc::new(ObservedMap::new()));
        tokio::spawn(
            KubeSource::new(client.clone(), KubeSettings::default()).run(index_tx, observed_tx),
        );
        tokio::spawn(status::run(client.clone(), problems_rx, observed_rx));
        Some(client)
    } else {
        if args.config_dirs.is_empty() {
            tracing::warn!("no --config-dir given: serving an empty configuration");
        }
        tokio::spawn(
            FileSource::new(args.config_dirs.clone())
                .watch(index_tx, Duration::from_millis(args.scan_interval_ms)),
        );
        None
    };
    let options = TranslateOptions {
        trust_domain: args.trust_domain.clone(),
        root_namespace: args.root_namespace.clone(),
        cluster_id: args.cluster_id.clone(),
    };
    let pipeline = tokio::spawn(pipeline::translate_loop(
        index_rx.clone(),
        pipeline::Outputs {
            snapshots: snap_tx,
            problems: problems_tx,
            readiness: readiness.clone(),
        },
        Translator::new(options),
    ));

    // CA and authentication.
    let ca = match (&kube_client, &args.ca_dir) {
        (Some(client), None) => {
            let (authority, origin) = secret_store::load_or_create(
                client.clone(),
                &args.root_namespace,
                &args.trust_domain,
            )
            .await?;
            CertificateAuthority::from_loaded(authority, origin, &args.trust_domain)
        }
        _ => CertificateAuthority::open(args.ca_dir.as_deref(), &args.trust_domain)?,
    };
    let ca = Arc::new(ca);
    tracing::info!(origin = ?ca.origin(), dir = ?args.ca_dir, "certificate authority ready");
    if let Some(client) = &kube_client {
        let roots_pem = ca.roots_pem()?;
        // Node proxies need the roots before anything else is listed.
        secret_store::publish_roots(client.clone(), &args.root_namespace, &roots_pem).await?;
        let controller_addr = args
            .waypoint_controller_addr
            .clone()
            .unwrap_or_else(|| format!("istiod.{}.svc:15012", args.root_namespace));
        let settings = DeploySettings {
            runtime: WaypointRuntime::kubernetes(&args.waypoint_image, &controller_addr),
            roots_pem,
            resync: Duration::from_secs(300),
            retry: Duration::from_secs(1),
        };
        tokio::spawn(deploy::run(client.clone(), index_rx.clone(), settings));
    }
    let authenticator: Arc<dyn Authenticator> = match (&kube_client, &args.tokens_file) {
        (Some(client), _) => Arc::new(TokenReviewAuthenticator::new(
            client.clone(),
            &args.trust_domain,
        )),
        (None, Some(path)) => Arc::new(TokenFile::new(path)),
        (None, None) => {
            tracing::warn!("no --tokens-file given: every caller will be refused");
            Arc::new(StaticTokens::default())
        }
    };
    let ca_service = CaService::new(
        ca.clone(),
        authenticator.clone(),
        Arc::new(IndexDirectory {
            index: index_rx,
            published: snap_rx.clone(),
        }),
        CaConfig::new(&args.trust_domain)?,
    );
    let xds = XdsServer::new(
        snap_rx.clone(),
        authenticator,
        XdsConfig {
            debounce: Duration::from_millis(args.debounce_ms),
            ..XdsConfig::default()
        },
    );

    // Endpoints.
    let identity = server::controller_identity(&args.trust_domain, &args.root_namespace)?;
    let tls = ServingTls::issue(ca, identity.clone())?;
    tokio::spawn(tls.clone().renew_forever());
    let grpc_listener = bind(args.xds_addr).await?;
    let admin_listener = bind(args.admin_addr).await?;
    tracing::info!(xds = %args.xds_addr, admin = %args.admin_addr, %identity, "controller serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grpc = tokio::spawn(server::serve(
        grpc_listener,
        tls,
        xds,
        ca_service,
        stopped(stop_rx.clone()),
    ));
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            metrics,
            snapshots: snap_rx,
            readiness,
            remote_debug: args.remote_debug,
        },
        stopped(stop_rx),
    ));

    shutdown_signal().await;
    tracing::info!("shutting down");
    // Dropping the snapshot sender ends every xDS stream, so the gRPC server can drain.
    pipeline.abort();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
        Err(_) => tracing::warn!("gRPC server did not drain in time"),
        _ => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the controller");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
