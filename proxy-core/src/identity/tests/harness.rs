//! An in-process controller (CA + xDS over loopback TLS) for certificate tests, with an
//! authenticator that counts certificate calls and how many run at once.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use controller::ca::auth::{AuthError, Authenticator, Caller, StaticTokens};
use controller::ca::{CaConfig, CaService, CertificateAuthority, NodeDirectory};
use controller::server::{ServingTls, controller_identity};
use controller::translate::Snapshot;
use controller::xds::{XdsConfig, XdsServer};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

pub const TD: &str = "cluster.local";
pub const NODE: &str = "node1";
pub const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
/// The node proxy's bearer token.
pub const TOKEN: &str = "ztunnel-node1";

/// Pods by node, changeable while the controller runs.
#[derive(Default)]
pub struct Pods(Mutex<Vec<(String, String, String)>>);

impl NodeDirectory for Pods {
    fn has_pod(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(n, ns, sa)| n == node && ns == namespace && sa == service_account)
    }
}

/// Accepts [`TOKEN`] as the node proxy of [`NODE`], after `delay`, counting calls.
pub struct CountingAuth {
    inner: StaticTokens,
    delay: Duration,
    pub calls: AtomicUsize,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Authenticator for CountingAuth {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.authenticate(token).await
    }
}

/// A running (or stopped) controller.
pub struct Controller {
    pub addr: SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    pub pods: Arc<Pods>,
    pub auth: Arc<CountingAuth>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<JoinHandle<()>>,
}

impl Controller {
    /// Starts on an ephemeral loopback port; each certificate call is delayed by `delay`.
    pub async fn start(delay: Duration) -> Self {
        let ca = Arc::new(CertificateAuthority::open(None, TD).unwrap());
        let auth = Arc::new(CountingAuth {
            inner: StaticTokens(HashMap::from([(
                TOKEN.to_owned(),
                Caller {
                    identity: ZTUNNEL.parse().unwrap(),
                    node: Some(NODE.to_owned()),
                },
            )])),
            delay,
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut controller = Self {
            addr: listener.local_addr().unwrap(),
            ca,
            pods: Arc::default(),
            auth,
            stop: None,
            done: None,
        };
        controller.launch(listener);
        controller
    }

    fn launch(&mut self, listener: TcpListener) {
        let (snapshots_tx, snapshots) = watch::channel(Some(Arc::new(Snapshot::default())));
        let xds = XdsServer::new(snapshots, self.auth.clone(), XdsConfig::default());
        let service = CaService::new(
            self.ca.clone(),
            self.auth.clone(),
            self.pods.clone(),
            CaConfig::new(TD).unwrap(),
        );
        let tls = ServingTls::issue(
            self.ca.clone(),
            controller_identity(TD, "istio-system").unwrap(),
        )
        .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.done = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = controller::server::serve(listener, tls, xds, service, shutdown).await;
            drop(snapshots_tx);
        }));
    }

    /// Stops serving: connections are closed and new ones refused until [`restart`].
    ///
    /// [`restart`]: Controller::restart
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            done.await.unwrap();
        }
    }

    /// Serves again on the same address with the same CA.
    pub async fn restart(&mut self) {
        let mut attempts = 0;
        let listener = loop {
            // The accept task releases the port shortly after the server stops.
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if attempts < 200 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "port still taken");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.launch(listener);
    }

    /// Lets [`NODE`] obtain certificates for `namespace`/`service_account`.
    pub fn add_pod(&self, namespace: &str, service_account: &str) {
        self.pods
            .0
            .lock()
            .unwrap()
            .push((NODE.into(), namespace.into(), service_account.into()));
    }

    /// The published roots, PEM.
    pub fn roots_pem(&self) -> String {
        self.ca.roots_pem().unwrap().concat()
    }

    /// A lazily connecting channel over TLS that accepts only the controller's identity.
    pub fn channel(&self) -> Channel {
        let roots = hbone::cert::certificates_from_pem(&self.roots_pem(), "roots").unwrap();
        let expected = controller_identity(TD, "istio-system").unwrap();
        let config = hbone::tls::client_config_without_client_auth(&roots, &[expected]).unwrap();
        Endpoint::from_static("http://controller.invalid").connect_with_connector_lazy(Connector {
            addr: self.addr,
            config: Arc::new(config),
        })
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Dials the controller over TLS.
#[derive(Clone)]
struct Connector {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

type Tls = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<http::Uri> for Connector {
    type Response = Tls;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Tls>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let name = rustls_pki_types::ServerName::IpAddress(this.addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Adds the node proxy's bearer token.
pub fn bearer<T>(request: &mut tonic::Request<T>) {
    test_support::grpc::add_token(request, TOKEN);
}

/// Awaits `future`, failing the test with `what` if it takes unreasonably long (a hang, not a
/// performance check).
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(90), future).await {
        Ok(value) => value,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}
