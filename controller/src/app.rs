//! Wiring of the controller: source (files, or the Kubernetes API) → index → translation →
//! delta xDS, the CA, status conditions, Events and waypoint deployment (Kubernetes), and the
//! admin endpoint; graceful shutdown.
//!
//! Start-up order: the leader election (Kubernetes), the config pipeline (its first snapshot
//! is awaited by xDS streams, not here), the CA (in Kubernetes, read from its Secret, which
//! only the leader creates), authentication, then the listeners. Every replica serves xDS and
//! the CA; the writers (status, Events, the CA Secret, waypoints and trust bundles, root
//! rotation) write only while this replica leads. On shutdown the Lease is released, every
//! xDS stream ends (so the gRPC server can drain, at most 5 s) and the admin endpoint stops.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState, Readiness};
use crate::ca::auth::{Authenticator, StaticTokens, TokenFile};
use crate::ca::rotation_secret::SecretStore;
use crate::ca::rotation_store::{FolderStore, RotationStore};
use crate::ca::tokenreview::TokenReviewAuthenticator;
use crate::ca::{CaService, CaSettings, CertificateAuthority, NodeDirectory, Origin, secret_store};
use crate::deploy::{self, DeploySettings, WaypointRuntime};
use crate::events::{EventSettings, EventWriter};
use crate::leader::{Elector, KubeLeases, LeaderSettings, Leadership};
use crate::model::Index;
use crate::pipeline;
use crate::root_rotation::RootRotation;
use crate::server::{self, ServingTls};
use crate::source::kube::ObservedMap;
use crate::source::{FileSource, KubeSettings, KubeSource};
use crate::status;
use crate::translate::{Published, TranslateOptions, Translator};
use crate::xds::{self, Clients, XdsServer, XdsSettings};

/// Settings of the controller, filled from the command line by the binary.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Folders of manifests (local mode).
    pub config_dirs: Vec<PathBuf>,
    /// Read objects from the Kubernetes API server instead.
    pub kubernetes: bool,
    /// gRPC endpoint (delta xDS and CA) over TLS.
    pub xds_addr: SocketAddr,
    /// Admin endpoint.
    pub admin_addr: SocketAddr,
    /// Whether `/debug/*` answers clients other than loopback.
    pub remote_debug: bool,
    /// Trust domain, root namespace and cluster name.
    pub translate: TranslateOptions,
    /// Folder of the CA's root (local mode, or to override the Kubernetes Secrets).
    pub ca_dir: Option<PathBuf>,
    /// Bearer tokens of callers (local mode).
    pub tokens_file: Option<PathBuf>,
    /// How long snapshot changes are coalesced before a push.
    pub debounce: Duration,
    /// How often the config folders are rescanned.
    pub scan_interval: Duration,
    /// Image of deployed waypoints (Kubernetes).
    pub waypoint_image: String,
    /// Where deployed waypoints reach the controller; default `istiod.<root-ns>.svc:15012`.
    pub waypoint_controller_addr: Option<String>,
    /// DNS names and IPs the serving certificate carries beyond its Services' names.
    pub serving_sans: Vec<hbone::ServingName>,
    /// Leader election among replicas (Kubernetes mode); `None`: this replica always writes.
    pub leader_election: Option<LeaderSettings>,
}

/// Errors that stop the controller at startup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The CA could not be loaded or created.
    #[error("CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// The trust domain or root namespace do not make an identity.
    #[error("invalid trust domain or namespace: {0}")]
    Identity(#[from] hbone::IdentityError),
    /// The gRPC endpoint could not be set up.
    #[error("gRPC endpoint: {0}")]
    Server(#[from] server::ServerError),
    /// A listener could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Kubernetes client could not be created or used.
    #[error("Kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    /// The leader election's settings could make two leaders.
    #[error("leader election: {0}")]
    LeaderElection(String),
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

/// The running config pipeline: its outputs, and the Kubernetes client when there is one.
struct Pipeline {
    index: watch::Receiver<Arc<Index>>,
    snapshots: watch::Receiver<Published>,
    readiness: Readiness,
    kube: Option<kube::Client>,
    translate: tokio::task::JoinHandle<()>,
}

/// Runs the controller until `shutdown` completes.
pub async fn run(
    config: ControllerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let kube = match config.kubernetes {
        true => Some(kube::Client::try_default().await?),
        false => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (leadership, election) = start_election(&config, kube.as_ref(), stopped(stop_rx.clone()))?;
    let pipeline = start_pipeline(&config, kube, &leadership).await?;
    let (ca, store) = open_ca(&config, pipeline.kube.as_ref(), &leadership).await?;
    let ca = Arc::new(ca);
    crate::metrics::global().ca.track(&ca);
    tracing::info!(origin = ?ca.origin(), dir = ?config.ca_dir, "certificate authority ready");
    let options = &config.translate;
    let identity = server::controller_identity(&options.trust_domain, &options.root_namespace)?;
    let names = server::serving_names(&options.root_namespace, &config.serving_sans);
    let tls = ServingTls::issue_with_names(ca.clone(), identity.clone(), names)?;
    tokio::spawn(tls.clone().renew_forever());
    // What xDS serves: each translation joined with the trust bundle root rotation keeps.
    let clients = Clients::default();
    let (served_tx, served) = watch::channel(None);
    let (rotation, bundle) = RootRotation::new(
        ca.clone(),
        store,
        clients.clone(),
        served.clone(),
        tls.clone(),
        leadership.clone(),
    )
    .await?;
    if let Some(client) = &pipeline.kube {
        let roots = rotation.roots();
        start_deployer(&config, client, roots, pipeline.index.clone(), &leadership);
    }
    tokio::spawn(xds::serve_with_trust_bundle(
        pipeline.snapshots.clone(),
        bundle,
        served_tx,
    ));
    tokio::spawn(rotation.clone().run(stopped(stop_rx.clone())));

    let authenticator = authenticator(&config, pipeline.kube.as_ref());
    let ca_service = ca_service(&config, ca, &authenticator, &pipeline, &served)?;
    let xds = XdsServer::new(
        served.clone(),
        authenticator,
        XdsSettings {
            debounce: config.debounce,
            ..XdsSettings::default()
        },
    )
    .with_clients(clients.clone());

    let grpc_listener = bind(config.xds_addr).await?;
    let admin_listener = bind(config.admin_addr).await?;
    let names: Vec<String> = tls.names().iter().map(ToString::to_string).collect();
    tracing::info!(
        xds = %config.xds_addr, admin = %config.admin_addr, %identity, names = %names.join(","),
        "controller serving"
    );
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
            metrics: crate::metrics::global().clone(),
            snapshots: served,
            readiness: pipeline.readiness,
            remote_debug: config.remote_debug,
            clients,
            rotation: Some(rotation),
        },
        stopped(stop_rx),
    ));

    shutdown.await;
    tracing::info!("shutting down");
    // Dropping the translation's sender ends the join, whose served sender then drops: every
    // xDS stream ends, so the gRPC server can drain.
    pipeline.translate.abort();
    let _ = stop_tx.send(true);
    drain(grpc, admin_task, election).await;
    Ok(())
}

/// Waits for the stopped tasks: the gRPC server's drain (at most 5 s), the admin endpoint,
/// and the Lease's release.
async fn drain(
    grpc: tokio::task::JoinHandle<Result<(), server::ServerError>>,
    admin: tokio::task::JoinHandle<()>,
    election: Option<tokio::task::JoinHandle<()>>,
) {
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
        Err(_) => tracing::warn!("gRPC server did not drain in time"),
        _ => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
    if let Some(election) = election {
        // Bounded by the release's own timeout; this only waits for it.
        let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    }
}

/// The leader election, in Kubernetes mode unless disabled: its task and what it publishes.
/// Elsewhere this process always leads.
fn start_election(
    config: &ControllerSettings,
    kube: Option<&kube::Client>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(Leadership, Option<tokio::task::JoinHandle<()>>), StartError> {
    let (Some(client), Some(settings)) = (kube, &config.leader_election) else {
        return Ok((Leadership::always(), None));
    };
    settings.validate().map_err(StartError::LeaderElection)?;
    let store = KubeLeases::new(client.clone(), &settings.namespace, &settings.lease_name);
    let metrics = crate::metrics::global().leader.clone();
    let (elector, leadership) = Elector::new(store, settings.clone(), metrics);
    Ok((leadership, Some(tokio::spawn(elector.run(shutdown)))))
}

/// Source → index → translation → snapshot (and, from Kubernetes, problems → status
/// conditions and Events).
async fn start_pipeline(
    config: &ControllerSettings,
    kube: Option<kube::Client>,
    leadership: &Leadership,
) -> Result<Pipeline, StartError> {
    let (index_tx, index) = watch::channel(Arc::new(Index::new()));
    let (snapshots_tx, snapshots) = watch::channel(None);
    let (problems_tx, problems) = watch::channel(None);
    let kube = if let Some(client) = kube {
        let (observed_tx, observed) = watch::channel(Arc::new(ObservedMap::new()));
        tokio::spawn(
            KubeSource::new(client.clone(), KubeSettings::default()).run(index_tx, observed_tx),
        );
        tokio::spawn(status::run_while_leading(
            client.clone(),
            problems.clone(),
            observed.clone(),
            leadership.clone(),
        ));
        let events = EventSettings::new(&EventSettings::instance_from_env());
        let metrics = crate::metrics::global().events.clone();
        let writer =
            EventWriter::new(client.clone(), events, metrics).with_leadership(leadership.clone());
        tokio::spawn(writer.run(problems, observed));
        Some(client)
    } else {
        if config.config_dirs.is_empty() {
            tracing::warn!("no --config-dir given: serving an empty configuration");
        }
        tokio::spawn(
            FileSource::new(config.config_dirs.clone()).watch(index_tx, config.scan_interval),
        );
        None
    };
    let readiness = Readiness::default();
    let translate = tokio::spawn(pipeline::translate_loop(
        index.clone(),
        pipeline::Outputs {
            snapshots: snapshots_tx,
            problems: problems_tx,
            readiness: readiness.clone(),
        },
        Translator::new(config.translate.clone()),
    ));
    Ok(Pipeline {
        index,
        snapshots,
        readiness,
        kube,
        translate,
    })
}

/// The CA and where its rotation lives: in Kubernetes its Secrets (unless `ca_dir`
/// overrides them; only the leader creates them), loaded as the rotation's record calls for;
/// else `ca_dir` (or memory, where it cannot rotate).
async fn open_ca(
    config: &ControllerSettings,
    kube: Option<&kube::Client>,
    leadership: &Leadership,
) -> Result<(CertificateAuthority, Option<Arc<dyn RotationStore>>), StartError> {
    let options = &config.translate;
    let poll = config
        .leader_election
        .as_ref()
        .map_or(Duration::from_secs(2), |l| l.retry_period);
    Ok(match (kube, &config.ca_dir) {
        (Some(client), None) => {
            // Created by the leader on first start, then read through the rotation's store.
            secret_store::load_as_replica(
                client.clone(),
                &options.root_namespace,
                &options.trust_domain,
                leadership.clone(),
                poll,
            )
            .await?;
            let store = SecretStore::new(client.clone(), &options.root_namespace);
            let (authority, origin) = store.live().await?;
            let ca = CertificateAuthority::from_loaded(authority, origin, &options.trust_domain);
            (ca, Some(Arc::new(store)))
        }
        _ => {
            let ca = CertificateAuthority::open(config.ca_dir.as_deref(), &options.trust_domain)?;
            let store = match (ca.origin(), ca.dir()) {
                (Origin::Ephemeral, _) | (_, None) => None,
                (_, Some(dir)) => Some(Arc::new(FolderStore::new(dir)) as Arc<dyn RotationStore>),
            };
            (ca, store)
        }
    })
}

/// Deploys waypoints and trust bundles while this replica leads (the roots first: node
/// proxies need them before anything else is listed).
fn start_deployer(
    config: &ControllerSettings,
    client: &kube::Client,
    roots: watch::Receiver<Vec<String>>,
    index: watch::Receiver<Arc<Index>>,
    leadership: &Leadership,
) {
    let root_namespace = &config.translate.root_namespace;
    let controller_addr = config
        .waypoint_controller_addr
        .clone()
        .unwrap_or_else(|| format!("istiod.{root_namespace}.svc:15012"));
    let settings = DeploySettings {
        runtime: WaypointRuntime::kubernetes(&config.waypoint_image, &controller_addr),
        roots_pem: roots.borrow().clone(),
        root_namespace: root_namespace.clone(),
        resync: Duration::from_secs(300),
        retry: Duration::from_secs(1),
    };
    tokio::spawn(deploy::run(
        client.clone(),
        index,
        settings,
        roots,
        leadership.clone(),
    ));
}

/// Who callers are: TokenReview in Kubernetes, else the tokens file (or nobody).
/// The CA's gRPC service: callers authenticated as xDS clients are, nodes known from the
/// index and the served snapshots.
fn ca_service(
    config: &ControllerSettings,
    ca: Arc<CertificateAuthority>,
    authenticator: &Arc<dyn Authenticator>,
    pipeline: &Pipeline,
    served: &watch::Receiver<Published>,
) -> Result<CaService, StartError> {
    Ok(CaService::new(
        ca,
        authenticator.clone(),
        Arc::new(IndexDirectory {
            index: pipeline.index.clone(),
            published: served.clone(),
        }),
        CaSettings::new(&config.translate.trust_domain)?,
    ))
}

fn authenticator(
    config: &ControllerSettings,
    kube: Option<&kube::Client>,
) -> Arc<dyn Authenticator> {
    match (kube, &config.tokens_file) {
        (Some(client), _) => Arc::new(TokenReviewAuthenticator::new(
            client.clone(),
            &config.translate.trust_domain,
        )),
        (None, Some(path)) => Arc::new(TokenFile::new(path)),
        (None, None) => {
            tracing::warn!("no --tokens-file given: every caller will be refused");
            Arc::new(StaticTokens::default())
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}
