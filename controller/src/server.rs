//! The controller's gRPC endpoint (xDS and CA on one port, 15012) over TLS.
//!
//! The serving certificate is issued by the controller's own CA for
//! `spiffe://<trust-domain>/ns/<root-namespace>/sa/controller`, renewed at half-life. Callers
//! authenticate with bearer tokens, so no client certificate is requested (a node proxy asks
//! for its first certificate before it has one).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hbone::Identity;
use rustls::ServerConfig;
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

/// The current TLS configuration, swapped when the serving certificate is renewed.
#[derive(Clone)]
pub struct ServingTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    identity: Identity,
    ca: Arc<CertificateAuthority>,
}

impl ServingTls {
    /// Issues the serving certificate for `identity` from `ca`.
    pub fn issue(ca: Arc<CertificateAuthority>, identity: Identity) -> Result<Self, ServerError> {
        let (config, _) = Self::fresh(&ca, &identity)?;
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(config))),
            identity,
            ca,
        })
    }

    fn fresh(
        ca: &CertificateAuthority,
        identity: &Identity,
    ) -> Result<(ServerConfig, SystemTime), ServerError> {
        let cert = ca.issue(identity, SERVING_TTL)?;
        Ok((
            hbone::tls::server_config_without_client_auth(&cert)?,
            cert.refresh_at(),
        ))
    }

    /// Reissues the certificate now (after a root rotation, or at half-life).
    pub fn renew(&self) -> Result<SystemTime, ServerError> {
        let (config, refresh_at) = Self::fresh(&self.ca, &self.identity)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(config);
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

    fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
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
