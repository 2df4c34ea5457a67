//! Where the dashboard's figures come from, and what one read of them finds: the sandbox (its
//! objects under its lock, every proxy's ports in its network namespace, certificates from the
//! proxies' config dumps) or a Kubernetes cluster (its API server; the proxies' metrics through
//! the pod proxy, as `stat` reads them; certificates from those metrics' gauges, the proxies'
//! admin port being out of the API server's reach).

use super::certs::{
    LeafCertificate, RootCertificate, certificates_from_metrics, leaf_certificates,
    root_certificate,
};
use crate::cluster::api::ApiServer;
use crate::cluster::args::KubeArgs;
use crate::cluster::check as cluster_check;
use crate::cluster::metrics::{all_objects, proxy_pods, scrape_all as scrape_pods};
use crate::cluster::targets::targets as cluster_targets;
use crate::operator::check::Check;
use crate::operator::stat::{Resource, Target};
use crate::operator::window::Scraped;
use crate::sandbox::model::stat::targets;
use crate::sandbox::ops::check;
use crate::sandbox::ops::proxies::{self, Proxy};
use crate::sandbox::ops::sandbox::Sandbox;
use crate::sandbox::ops::scrape::scrape_all;
use crate::sandbox::settings::SandboxSettings;

/// Why a tap cannot run in Kubernetes mode (as `meshctl tap` says there).
pub const TAP_IN_KUBERNETES: &str = "tap reads the proxies' admin port, which listens on their \
    pods' loopback only, out of the API server's reach: in Kubernetes mode the dashboard has no \
    live requests";

/// The mesh the dashboard looks at.
pub enum Source {
    /// The sandbox of these settings.
    Sandbox(SandboxSettings),
    /// The cluster these flags select, read with a runtime of the sampler's own.
    Cluster(KubeArgs, tokio::runtime::Runtime),
}

/// What one read finds.
pub struct Found {
    /// The proxies scraped, as `proxy-status` names them.
    pub names: Vec<String>,
    /// Their samples, in the order of `names`.
    pub scraped: Vec<Scraped>,
    /// `stat ns` rows' objects and pods.
    pub namespaces: Vec<Target>,
    /// `stat deploy` rows' objects and pods.
    pub deployments: Vec<Target>,
    /// `stat svc` rows' objects and pods.
    pub services: Vec<Target>,
    /// `check`'s checks.
    pub checks: Vec<Check>,
    /// The CA root.
    pub root: Option<RootCertificate>,
    /// Every workload certificate the proxies hold.
    pub certificates: Vec<LeafCertificate>,
}

impl Source {
    /// A cluster source, with the runtime its reads run on.
    pub fn cluster(kube: KubeArgs) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))?;
        Ok(Self::Cluster(kube, runtime))
    }

    /// What the dashboard says it shows (`sandbox mesh`, `the cluster of context prod`).
    pub fn label(&self) -> String {
        match self {
            Self::Sandbox(cfg) => format!("sandbox {}", cfg.name),
            Self::Cluster(kube, _) => match (&kube.context, &kube.kubeconfig) {
                (Some(context), _) => format!("the cluster of context {context}"),
                (None, Some(path)) => format!("the cluster of {}", path.display()),
                (None, None) => "the cluster of the current kubeconfig context".to_owned(),
            },
        }
    }

    /// The sandbox, when that is the source (tap runs there only).
    pub fn sandbox(&self) -> Option<&SandboxSettings> {
        match self {
            Self::Sandbox(cfg) => Some(cfg),
            Self::Cluster(..) => None,
        }
    }

    /// One read; `at` (Unix seconds) judges the certificates.
    pub fn read(&self, at: u64) -> Result<Found, String> {
        match self {
            Self::Sandbox(cfg) => read_sandbox(cfg, at),
            Self::Cluster(kube, runtime) => runtime.block_on(read_cluster(kube, at)),
        }
    }
}

/// Objects, checks and root under the sandbox's lock; then, with the lock released, every
/// proxy's metrics and certificates.
fn read_sandbox(cfg: &SandboxSettings, at: u64) -> Result<Found, String> {
    let (proxies, namespaces, deployments, services, checks, root) = {
        let sb = Sandbox::open(cfg).map_err(|e| e.to_string())?;
        let rows = |resource| targets(&sb.cluster, resource, None, None);
        let root = std::fs::read_to_string(sb.layout().root_cert())
            .ok()
            .and_then(|pem| root_certificate(&pem));
        (
            proxies::all(&sb),
            rows(Resource::Namespace),
            rows(Resource::Deployment),
            rows(Resource::Service),
            check::run(&sb),
            root,
        )
    };
    Ok(Found {
        names: proxies.iter().map(|p| p.name.clone()).collect(),
        scraped: scrape_all(&proxies),
        certificates: dump_certificates(&proxies, at),
        namespaces,
        deployments,
        services,
        checks,
        root,
    })
}

/// Every workload certificate `proxies` hold, judged at `at` (Unix seconds); a proxy whose
/// config dump cannot be read holds none (`check` says why).
fn dump_certificates(proxies: &[Proxy], at: u64) -> Vec<LeafCertificate> {
    proxies
        .iter()
        .filter_map(|p| {
            let dump = proxies::config_dump(p).ok()?;
            Some(leaf_certificates(&p.name, &dump, at as i64))
        })
        .flatten()
        .collect()
}

/// The cluster's objects, `check`, the published root and every proxy's metrics, through
/// the API server.
async fn read_cluster(kube: &KubeArgs, at: u64) -> Result<Found, String> {
    let api = ApiServer::connect(kube).await.map_err(|e| e.to_string())?;
    let proxies = proxy_pods(&api).await.map_err(|e| e.to_string())?;
    let scraped = scrape_pods(&api, &proxies).await;
    let objects = all_objects(&api).await.map_err(|e| e.to_string())?;
    let rows = |resource| cluster_targets(&objects, resource, None, None);
    let certificates = proxies
        .iter()
        .zip(&scraped)
        .filter_map(|(proxy, scraped)| scraped.as_ref().ok().map(|s| (proxy, s)))
        .flat_map(|(proxy, samples)| certificates_from_metrics(&proxy.name, samples, at as i64))
        .collect();
    Ok(Found {
        names: proxies.iter().map(|p| p.name.clone()).collect(),
        namespaces: rows(Resource::Namespace),
        deployments: rows(Resource::Deployment),
        services: rows(Resource::Service),
        checks: cluster_check::run(&api).await,
        root: cluster_check::root_pem(&api)
            .await
            .ok()
            .and_then(|pem| root_certificate(&pem)),
        scraped,
        certificates,
    })
}
