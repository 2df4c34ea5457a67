//! An in-process controller endpoint: the controller's own xDS server and CA behind its own
//! gRPC-over-TLS server, on a loopback port, serving a snapshot the test replaces.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::ca::auth::{Authenticator, Caller, StaticTokens};
use controller::ca::{CaService, CaSettings, CertificateAuthority, NodeDirectory};
use controller::server::{ServerError, ServingTls};
use controller::translate::{Published, Snapshot};
use controller::xds::{XdsServer, XdsSettings};
use hbone::{Identity, WorkloadCertificate};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::TempDir;

/// The trust domain of the controller and of every identity it issues.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// How long [`Controller::stop`] waits for the server to end, and [`Controller::restart`]
/// for its port to be free again.
const PATIENCE: Duration = Duration::from_secs(30);

/// The controller's identity, which its clients expect of its certificate.
pub fn controller_identity() -> Identity {
    controller::server::controller_identity(TRUST_DOMAIN, "istio-system")
        .expect("the controller's identity")
}

/// A channel to the controller at `addr` that connects on first use, over TLS accepting
/// only the controller's identity chained to `roots_pem`; it presents no client certificate.
pub fn channel_to(addr: SocketAddr, roots_pem: &str) -> Channel {
    let roots = hbone::cert::certificates_from_pem(roots_pem, "roots").expect("the roots parse");
    let config = hbone::tls::client_config_without_client_auth(&roots, &[controller_identity()])
        .expect("a client configuration");
    let config = Arc::new(config);
    Endpoint::from_static("http://controller.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_: Uri| {
            let config = config.clone();
            async move { crate::tls::connect(addr, config).await.map(TokioIo::new) }
        }),
    )
}

/// Which service accounts have a pod on which node: what the CA checks a node proxy's
/// impersonation against. Tests change it while the controller runs.
#[derive(Default)]
pub struct Pods(Mutex<Vec<(String, String, String)>>);

impl Pods {
    /// Puts a pod running as `namespace`/`service_account` on `node`.
    pub fn add(&self, node: &str, namespace: &str, service_account: &str) {
        self.0
            .lock()
            .unwrap()
            .push((node.into(), namespace.into(), service_account.into()));
    }
}

impl NodeDirectory for Pods {
    fn has_pod(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(n, ns, sa)| n == node && ns == namespace && sa == service_account)
    }
}

/// How a [`Controller`] starts: its CA, who it accepts, how it pushes, what it serves first.
pub struct ControllerBuilder {
    ca: Option<CertificateAuthority>,
    tokens: HashMap<String, Caller>,
    authenticator: Option<Arc<dyn Authenticator>>,
    debounce: Duration,
    snapshot: Published,
}

impl ControllerBuilder {
    /// Signs with `ca` rather than a new root of its own.
    pub fn ca(mut self, ca: CertificateAuthority) -> Self {
        self.ca = Some(ca);
        self
    }

    /// Accepts the bearer token `token` as `identity`, the node proxy of `node` when given.
    pub fn token(mut self, token: &str, identity: &str, node: Option<&str>) -> Self {
        let caller = Caller {
            identity: identity.parse().expect("a valid identity"),
            node: node.map(Into::into),
        };
        self.tokens.insert(token.to_owned(), caller);
        self
    }

    /// Authenticates callers with `authenticator` instead of the [`token`]s.
    ///
    /// [`token`]: ControllerBuilder::token
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Coalesces snapshot changes for `debounce` before a push (default 10 ms).
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Serves `snapshot` first (default: an empty snapshot; `None`: nothing translated yet).
    pub fn snapshot(mut self, snapshot: impl Into<Published>) -> Self {
        self.snapshot = snapshot.into();
        self
    }

    /// Serves on an ephemeral loopback port.
    pub async fn start(self) -> Controller {
        let ca = self.ca.unwrap_or_else(|| {
            CertificateAuthority::open(None, TRUST_DOMAIN).expect("a certificate authority")
        });
        let authenticator = self
            .authenticator
            .unwrap_or_else(|| Arc::new(StaticTokens(self.tokens)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let mut controller = Controller {
            addr: listener.local_addr().expect("the port's address"),
            ca: Arc::new(ca),
            pods: Arc::default(),
            authenticator,
            debounce: self.debounce,
            snapshots: None,
            stop: None,
            task: None,
            files: TempDir::new("controller-files"),
            token_files: AtomicUsize::new(0),
        };
        controller.serve(listener, self.snapshot);
        controller
    }
}

/// A running (or stopped) controller endpoint. Dropping it stops the server.
pub struct Controller {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate authority.
    pub ca: Arc<CertificateAuthority>,
    /// The pods its CA knows of.
    pub pods: Arc<Pods>,
    authenticator: Arc<dyn Authenticator>,
    debounce: Duration,
    snapshots: Option<watch::Sender<Published>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    /// Root certificate and token files handed to clients.
    files: TempDir,
    token_files: AtomicUsize,
}

impl Controller {
    /// A controller with a new root, no callers, a 10 ms push debounce, serving an empty
    /// snapshot.
    pub fn builder() -> ControllerBuilder {
        ControllerBuilder {
            ca: None,
            tokens: HashMap::new(),
            authenticator: None,
            debounce: Duration::from_millis(10),
            snapshot: Some(Arc::new(Snapshot::default())),
        }
    }

    fn serve(&mut self, listener: TcpListener, snapshot: Published) {
        let (snapshots, receiver) = watch::channel(snapshot);
        let xds = XdsServer::new(
            receiver,
            self.authenticator.clone(),
            XdsSettings {
                debounce: self.debounce,
                outbound_capacity: 4,
            },
        );
        let ca = CaService::new(
            self.ca.clone(),
            self.authenticator.clone(),
            self.pods.clone(),
            CaSettings::new(TRUST_DOMAIN).expect("a CA configuration"),
        );
        // The names the real controller carries, and the loopback address it is dialled at.
        let names = controller::server::serving_names(
            "istio-system",
            &[hbone::ServingName::Ip([127, 0, 0, 1].into())],
        );
        let tls = ServingTls::issue_with_names(self.ca.clone(), controller_identity(), names)
            .expect("a serving certificate");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        self.task = Some(tokio::spawn(controller::server::serve(
            listener, tls, xds, ca, shutdown,
        )));
        self.snapshots = Some(snapshots);
        self.stop = Some(stop);
    }

    /// Replaces what is served (`None`: as if nothing were translated yet).
    pub fn publish(&self, snapshot: impl Into<Published>) {
        self.snapshots
            .as_ref()
            .expect("a running controller")
            .send_replace(snapshot.into());
    }

    /// Ends every stream, then the server, and waits until it is gone: connections are
    /// closed and new ones refused until [`restart`]. Panics if the server failed.
    ///
    /// [`restart`]: Controller::restart
    pub async fn stop(&mut self) {
        // Streams end when their snapshot source goes away; then the server can drain.
        self.snapshots = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("the controller stops")
                .expect("the server task ends")
                .expect("the server ends cleanly");
        }
    }

    /// Serves `snapshot` again on the same address, with the same CA, callers and pods.
    pub async fn restart(&mut self, snapshot: impl Into<Published>) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let listener = loop {
            // The port is released shortly after the server stops.
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.serve(listener, snapshot.into());
    }

    /// The published roots, PEM.
    pub fn roots_pem(&self) -> String {
        self.ca.roots_pem().expect("the roots").concat()
    }

    /// A file holding the published roots, as clients are given them.
    pub fn root_cert(&self) -> PathBuf {
        self.files.write("root-cert.pem", self.roots_pem())
    }

    /// A new file holding `token`, as clients are given it.
    pub fn token_file(&self, token: &str) -> PathBuf {
        let n = self.token_files.fetch_add(1, Ordering::Relaxed);
        self.files.write(format!("token-{n}"), format!("{token}\n"))
    }

    /// A certificate for `identity` from this controller's CA, valid for an hour.
    pub fn issue(&self, identity: &Identity) -> Arc<WorkloadCertificate> {
        Arc::new(
            self.ca
                .issue(identity, Duration::from_secs(3600))
                .expect("a certificate"),
        )
    }

    /// A channel that connects on first use, over TLS accepting only the controller's
    /// identity chained to its roots; it presents no client certificate.
    pub fn channel(&self) -> Channel {
        channel_to(self.addr, &self.roots_pem())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
