//! The in-process controller (CA + xDS over loopback TLS) for certificate tests, with an
//! authenticator that counts certificate calls and how many run at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use controller::ca::auth::{AuthError, Authenticator, Caller, StaticTokens};
use controller::translate::Snapshot;
use test_support::control_plane;
use tonic::transport::Channel;

pub const TD: &str = "cluster.local";
pub const NODE: &str = "node1";
pub const ZTUNNEL: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
/// The node proxy's bearer token.
pub const TOKEN: &str = "ztunnel-node1";

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

/// The controller endpoint, authenticating with a [`CountingAuth`].
pub struct Controller {
    endpoint: control_plane::Controller,
    pub auth: Arc<CountingAuth>,
}

impl Controller {
    /// Starts on an ephemeral loopback port; each certificate call is delayed by `delay`.
    pub async fn start(delay: Duration) -> Self {
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
        let endpoint = control_plane::Controller::builder()
            .authenticator(auth.clone())
            .start()
            .await;
        Self { endpoint, auth }
    }

    /// Stops serving: connections are closed and new ones refused until [`restart`].
    ///
    /// [`restart`]: Controller::restart
    pub async fn stop(&mut self) {
        self.endpoint.stop().await;
    }

    /// Serves again on the same address with the same CA.
    pub async fn restart(&mut self) {
        self.endpoint.restart(Arc::new(Snapshot::default())).await;
    }

    /// Lets [`NODE`] obtain certificates for `namespace`/`service_account`.
    pub fn add_pod(&self, namespace: &str, service_account: &str) {
        self.endpoint.pods.add(NODE, namespace, service_account);
    }

    /// The CA (to rotate its root).
    pub fn ca(&self) -> &Arc<controller::ca::CertificateAuthority> {
        &self.endpoint.ca
    }

    /// The published roots, PEM.
    pub fn roots_pem(&self) -> String {
        self.endpoint.roots_pem()
    }

    /// A lazily connecting channel over TLS that accepts only the controller's identity.
    pub fn channel(&self) -> Channel {
        self.endpoint.channel()
    }
}

/// Adds the node proxy's bearer token.
pub fn bearer<T>(request: &mut tonic::Request<T>) {
    test_support::grpc::add_token(request, TOKEN);
}
