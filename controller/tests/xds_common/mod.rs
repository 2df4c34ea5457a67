//! Shared by the xDS and CA tests: a controller gRPC endpoint on loopback TLS, and tonic
//! clients that verify its identity with hbone's client configuration.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use controller::ca::auth::{Caller, StaticTokens};
use controller::ca::{CaConfig, CaService, CertificateAuthority, NodeDirectory};
use controller::server::{ServingTls, controller_identity};
use controller::translate::Published;
use controller::xds::{XdsConfig, XdsServer};
use hbone::Identity;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint, Uri};

pub const TD: &str = "cluster.local";
pub const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";

/// Pods by node, changeable while the server runs.
#[derive(Default)]
pub struct Pods(pub Mutex<Vec<(String, String, String)>>);

impl NodeDirectory for Pods {
    fn has_pod(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(n, ns, sa)| n == node && ns == namespace && sa == service_account)
    }
}

/// A running endpoint.
pub struct Harness {
    pub addr: SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    pub pods: Arc<Pods>,
}

/// Installs a process-wide Prometheus recorder once, so tests can read counters.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The sum of a counter's samples (all label sets) in the rendered metrics.
pub fn counter(name: &str) -> f64 {
    metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn tokens() -> StaticTokens {
    let caller = |id: &str, node: Option<&str>| Caller {
        identity: id.parse().unwrap(),
        node: node.map(Into::into),
    };
    StaticTokens(HashMap::from([
        ("zt-node1".to_owned(), caller(ZTUNNEL, Some("node1"))),
        ("zt-node2".to_owned(), caller(ZTUNNEL, Some("node2"))),
        (
            "app".to_owned(),
            caller("spiffe://cluster.local/ns/app/sa/web", Some("node1")),
        ),
    ]))
}

/// Starts xDS + CA on an ephemeral loopback port.
pub async fn start(snapshots: watch::Receiver<Published>, ca: CertificateAuthority) -> Harness {
    metrics();
    let ca = Arc::new(ca);
    let pods = Arc::new(Pods::default());
    let auth = Arc::new(tokens());
    let xds = XdsServer::new(
        snapshots,
        auth.clone(),
        XdsConfig {
            debounce: Duration::from_millis(20),
            outbound_capacity: 4,
        },
    );
    let service = CaService::new(ca.clone(), auth, pods.clone(), CaConfig::new(TD).unwrap());
    let tls =
        ServingTls::issue(ca.clone(), controller_identity(TD, "istio-system").unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(controller::server::serve(
        listener,
        tls,
        xds,
        service,
        std::future::pending(),
    ));
    Harness { addr, ca, pods }
}

impl Harness {
    /// A channel over TLS that accepts only the controller's identity.
    pub async fn channel(&self) -> Channel {
        // The client presents no certificate to the controller (it does not ask), but hbone's
        // config builder wants one: any identity will do.
        let throwaway = self
            .ca
            .issue(
                &"spiffe://cluster.local/ns/test/sa/client".parse().unwrap(),
                Duration::from_secs(600),
            )
            .unwrap();
        let expected: Identity = controller_identity(TD, "istio-system").unwrap();
        let config = Arc::new(hbone::tls::client_config(&throwaway, &[expected]).unwrap());
        let addr = self.addr;
        Endpoint::from_static("http://controller.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let config = config.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                    let tls = tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .unwrap()
    }
}
