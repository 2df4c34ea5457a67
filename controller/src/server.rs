//! The controller's gRPC endpoint (xDS and CA on one port, 15012) over TLS.
//!
//! The serving certificate is issued by the controller's own CA for
//! `spiffe://<trust-domain>/ns/<root-namespace>/sa/controller`, renewed at half-life. It also
//! carries the DNS names of the controller's Services and any names or IPs the operator adds
//! ([`serving_names`]), because Istio's ztunnel verifies its control plane by name (the istiod
//! Service, or the IP it dialled), while the mesh's own proxies check the SPIFFE identity.
//! Callers authenticate with bearer tokens, so no client certificate is requested (a node proxy
//! asks for its first certificate before it has one).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hbone::{Identity, ServingName};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::ca::{CaError, CaService, CertificateAuthority};
use crate::xds::XdsServer;

/// Validity of the controller's serving certificate.
pub const SERVING_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel backlog.
pub const MAX_HANDSHAKES: usize = 256;
/// The Services `manifests/controller.yaml` puts in front of the controller: clients reach it
/// as `<service>.<root-namespace>.svc` (Istio's default is `istiod.istio-system.svc`).
pub const SERVICE_NAMES: &[&str] = &["istiod"];
/// The Kubernetes cluster domain of the Services' fully qualified names.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Errors of the gRPC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The serving certificate could not be issued.
    #[error("issuing the serving certificate: {0}")]
    Ca(#[from] CaError),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Serving failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The identity the controller serves as.
pub fn controller_identity(
    trust_domain: &str,
    namespace: &str,
) -> Result<Identity, hbone::IdentityError> {
    Identity::new(trust_domain, namespace, "controller")
}

/// The names the serving certificate carries beside the identity: for every Service in
/// [`SERVICE_NAMES`], `<svc>.<namespace>.svc` and `<svc>.<namespace>.svc.cluster.local`, then
/// `extra` (the operator's `--serving-san`), each once, in that order.
pub fn serving_names(namespace: &str, extra: &[ServingName]) -> Vec<ServingName> {
    let mut names = Vec::new();
    for service in SERVICE_NAMES {
        for name in [
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.{CLUSTER_DOMAIN}"),
        ] {
            // A namespace that makes no DNS name is refused where it is used as one.
            if let Ok(name) = name.parse() {
                names.push(name);
            }
        }
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// The TLS configuration in use and the certificate it presents.
struct Serving {
    config: Arc<ServerConfig>,
    leaf: CertificateDer<'static>,
}

/// The current TLS configuration, swapped when the serving certificate is renewed.
#[derive(Clone)]
pub struct ServingTls {
    current: Arc<RwLock<Serving>>,
    identity: Identity,
    names: Arc<[ServingName]>,
    ca: Arc<CertificateAuthority>,
}

impl ServingTls {
    /// Issues the serving certificate for `identity` from `ca`, with no names beside it.
    pub fn issue(ca: Arc<CertificateAuthority>, identity: Identity) -> Result<Self, ServerError> {
        Self::issue_with_names(ca, identity, Vec::new())
    }

    /// Issues the serving certificate for `identity` and `names` (see [`serving_names`]) from
    /// `ca`; every renewal carries the same names.
    pub fn issue_with_names(
        ca: Arc<CertificateAuthority>,
        identity: Identity,
        names: Vec<ServingName>,
    ) -> Result<Self, ServerError> {
        let (serving, _) = Self::fresh(&ca, &identity, &names)?;
        Ok(Self {
            current: Arc::new(RwLock::new(serving)),
            identity,
            names: names.into(),
            ca,
        })
    }

    fn fresh(
        ca: &CertificateAuthority,
        identity: &Identity,
        names: &[ServingName],
    ) -> Result<(Serving, SystemTime), ServerError> {
        let cert = ca.issue_serving(identity, names, SERVING_TTL)?;
        let serving = Serving {
            config: Arc::new(hbone::tls::server_config_without_client_auth(&cert)?),
            leaf: cert.chain()[0].clone(),
        };
        Ok((serving, cert.refresh_at()))
    }

    /// Reissues the certificate now (after a root rotation, or at half-life).
    pub fn renew(&self) -> Result<SystemTime, ServerError> {
        let (serving, refresh_at) = Self::fresh(&self.ca, &self.identity, &self.names)?;
        if let Ok(mut current) = self.current.write() {
            *current = serving;
        }
        Ok(refresh_at)
    }

    /// Renews the certificate at half-life, forever (retrying every minute on failure).
    pub async fn renew_forever(self) {
        let mut next = SystemTime::now() + SERVING_TTL / 2;
        loop {
            let wait = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            next = match self.renew() {
                Ok(at) => at,
                Err(e) => {
                    tracing::error!(error = %e, "renewing the serving certificate");
                    SystemTime::now() + Duration::from_secs(60)
                }
            };
        }
    }

    /// The names the certificate carries beside the identity.
    pub fn names(&self) -> &[ServingName] {
        &self.names
    }

    /// The certificate presented now (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        match self.current.read() {
            Ok(c) => c.leaf.clone(),
            Err(poisoned) => poisoned.into_inner().leaf.clone(),
        }
    }

    fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }
}

/// An accepted TLS connection, as tonic serves it.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    remote: SocketAddr,
    local: Option<SocketAddr>,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: Some(self.remote),
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections on `listener` and completes each TLS handshake in its own task
/// (bounded in number and time), yielding the finished connections. Failed handshakes are
/// logged and dropped; the stream ends when its consumer does.
pub fn incoming(listener: TcpListener, tls: ServingTls) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let local = tcp.local_addr().ok();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let conn = TlsConn {
                            inner,
                            remote,
                            local,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serves xDS and the CA on `listener` until `shutdown` completes and open streams end.
pub async fn serve(
    listener: TcpListener,
    tls: ServingTls,
    xds: XdsServer,
    ca: CaService,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    tonic::transport::Server::builder()
        // Bound per-connection concurrency: a node proxy needs a handful of streams.
        .max_concurrent_streams(256)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(xds.into_service())
        .add_service(ca.into_service())
        .serve_with_incoming_shutdown(incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hbone::Authority;
    use hbone::cert::subject_alt_names;
    use rustls_pki_types::ServerName;

    fn names(extra: &[&str]) -> Vec<ServingName> {
        let extra: Vec<ServingName> = extra.iter().map(|n| n.parse().unwrap()).collect();
        serving_names("istio-system", &extra)
    }

    /// Completes a handshake with the current configuration, the client verifying `name`
    /// against `roots` as any TLS client does.
    async fn verify_by_name(tls: &ServingTls, roots: &[CertificateDer<'static>], name: &str) {
        let client = hbone::tls::client_config_verifying_name(roots).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            acceptor.accept(tcp).await.map(drop)
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("the serving certificate verifies by name");
        server.await.unwrap().unwrap();
    }

    #[test]
    fn the_service_names_come_first_and_extras_once() {
        let rendered: Vec<String> = names(&["istiod.istio-system.svc", "10.0.0.1", "mesh.example"])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            rendered,
            [
                "istiod.istio-system.svc",
                "istiod.istio-system.svc.cluster.local",
                "10.0.0.1",
                "mesh.example"
            ]
        );
    }

    #[tokio::test]
    async fn the_serving_certificate_carries_identity_and_names_across_renewals_and_rotations() {
        let ca = Arc::new(CertificateAuthority::open(None, "cluster.local").unwrap());
        let identity = controller_identity("cluster.local", "istio-system").unwrap();
        let tls =
            ServingTls::issue_with_names(ca.clone(), identity, names(&["172.18.255.1"])).unwrap();
        let expected = [
            "URI:spiffe://cluster.local/ns/istio-system/sa/controller",
            "DNS:istiod.istio-system.svc",
            "DNS:istiod.istio-system.svc.cluster.local",
            "IP:172.18.255.1",
        ];
        let first = tls.leaf();
        assert_eq!(subject_alt_names(&first).unwrap(), expected);
        let roots =
            hbone::cert::certificates_from_pem(&ca.roots_pem().unwrap().concat(), "roots").unwrap();
        verify_by_name(&tls, &roots, "istiod.istio-system.svc").await;

        tls.renew().unwrap();
        assert_ne!(tls.leaf(), first, "renewed");
        assert_eq!(subject_alt_names(&tls.leaf()).unwrap(), expected);

        // A root rotation: the new root signs, the renewed certificate keeps its names.
        let next = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
        let next_root = next.roots().to_vec();
        ca.rotate(next).unwrap();
        tls.renew().unwrap();
        assert_eq!(subject_alt_names(&tls.leaf()).unwrap(), expected);
        verify_by_name(&tls, &next_root, "istiod.istio-system.svc.cluster.local").await;
    }
}
