//! The `controller` binary: source (files, or the Kubernetes API) → index → translation →
//! delta xDS, the CA, status conditions (Kubernetes), and the admin endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use controller::app::{self, ControllerSettings};
use controller::duration::parse_duration;
use controller::leader::LeaderSettings;
use controller::translate::TranslateOptions;

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
        (spiffe://<trust-domain>/ns/<ns>/sa/<sa>). Its own certificate carries \
        spiffe://<trust-domain>/ns/<root-namespace>/sa/controller for the mesh's proxies and \
        the DNS names istiod.<root-namespace>.svc[.cluster.local] (plus --serving-san) for \
        clients that verify it by name, as Istio's ztunnel does.\n\n\
        Local mode: the CA root is generated on first start and kept in --ca-dir (or an \
        intermediate plugged in there as ca-cert.pem, ca-key.pem, cert-chain.pem, \
        root-cert.pem); callers authenticate with bearer tokens listed in --tokens-file.\n\n\
        Kubernetes mode (--kubernetes, in-cluster config or the usual kubeconfig): the CA \
        root lives in the Secret istio-ca-secret of --root-namespace (the plug-in Secret \
        cacerts wins when present; --ca-dir overrides both); callers present service account \
        tokens (audience istio-ca) checked with TokenReview; problems found in objects are \
        written to their status conditions; every Gateway of class istio-waypoint gets its \
        waypoint (ServiceAccount, Deployment, Service, owned by the Gateway) and its status \
        address; every namespace gets the trust bundle ConfigMap istio-ca-root-cert. Several \
        replicas elect a leader through the Lease mesh-controller-leader of --root-namespace \
        (holder: POD_NAME, else the host name): every replica serves xDS and the CA, only the \
        leader writes (status, Events, the CA Secret, waypoints, trust bundles).\n\n\
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
    /// Linkerd's clusterNetworks (comma-separated CIDRs): the client networks Linkerd's
    /// `cluster-authenticated` / `cluster-unauthenticated` default inbound policies admit.
    #[arg(long, default_value = controller::translate::DEFAULT_CLUSTER_NETWORKS, value_delimiter = ',')]
    cluster_networks: Vec<String>,
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
    /// A DNS name or IP address the serving certificate carries beside its SPIFFE identity and
    /// the names istiod.<root-namespace>.svc and istiod.<root-namespace>.svc.cluster.local, for
    /// clients that verify the controller by the name or IP they dial (Istio's ztunnel);
    /// repeatable.
    #[arg(long = "serving-san", value_name = "NAME|IP")]
    serving_sans: Vec<hbone::ServingName>,
    /// Elect a leader among the controller's replicas through a Lease (Kubernetes mode); with
    /// `--leader-elect=false` this replica always writes (one replica only).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// How long followers wait after the last renewal they saw before taking the Lease over.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps writing without renewing the Lease before it steps down;
    /// shorter than the lease duration.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: Duration,
    /// Time between attempts to acquire or renew the Lease.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// This replica's holderIdentity in the Lease; default: $POD_NAME, else the host name.
    #[arg(long, value_name = "NAME")]
    leader_elect_identity: Option<String>,
    /// Log filter in `tracing` syntax (for example `info` or `controller=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        // Colour only on a terminal: log files and `kubectl logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = args.config();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("controller: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(config, controller::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("controller: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Args {
    /// The controller's settings.
    fn config(&self) -> ControllerSettings {
        ControllerSettings {
            config_dirs: self.config_dirs.clone(),
            kubernetes: self.kubernetes,
            xds_addr: self.xds_addr,
            admin_addr: self.admin_addr,
            remote_debug: self.remote_debug,
            translate: TranslateOptions {
                trust_domain: self.trust_domain.clone(),
                root_namespace: self.root_namespace.clone(),
                cluster_id: self.cluster_id.clone(),
                cluster_networks: self.cluster_networks.clone(),
            },
            ca_dir: self.ca_dir.clone(),
            tokens_file: self.tokens_file.clone(),
            debounce: Duration::from_millis(self.debounce_ms),
            scan_interval: Duration::from_millis(self.scan_interval_ms),
            waypoint_image: self.waypoint_image.clone(),
            waypoint_controller_addr: self.waypoint_controller_addr.clone(),
            serving_sans: self.serving_sans.clone(),
            leader_election: self.leader_elect.then(|| self.leader_settings()),
        }
    }

    /// The leader election's settings: the Lease lives in the controller's namespace.
    fn leader_settings(&self) -> LeaderSettings {
        let identity = self
            .leader_elect_identity
            .clone()
            .unwrap_or_else(controller::leader::settings::identity_from_env);
        LeaderSettings {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            ..LeaderSettings::new(&self.root_namespace, &identity)
        }
    }
}
