//! The gRPC channel to the controller: TLS 1.3 verified against the mesh roots and the
//! controller's SPIFFE identity (or, when configured with a DNS name, that name as any TLS
//! client checks it), with the node's bearer token on every call.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hbone::Identity;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Endpoint, Uri};

use crate::settings::ControlPlaneSettings;

pub use crate::learned_roots::LearnedRoots;

/// Longest a connection attempt may take: TCP, TLS and the HTTP/2 handshake together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection is probed, so a vanished controller is noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a probe may go unanswered before the connection is considered dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between attempts to reach the controller: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(15);
/// Largest token file read; service account tokens are a few kilobytes.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Largest root bundle read.
const MAX_ROOTS_BYTES: u64 = 1024 * 1024;

/// The command-line flags naming the controller and how to trust it, shared by the mesh's
/// proxy binaries.
#[derive(clap::Args, Clone, Debug)]
pub struct ControlArgs {
    /// `host:port` of the controller's gRPC endpoint.
    #[arg(long, default_value = "istiod.istio-system.svc:15012")]
    pub controller: String,
    /// PEM roots the controller's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub root_cert: PathBuf,
    /// File holding the bearer token sent to the controller.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// SPIFFE identity the controller must present; or a DNS name (or IP), without the
    /// `spiffe://` prefix, its certificate must be valid for, checked as any TLS client checks
    /// a server name and sent as SNI (for example `istiod.istio-system.svc`).
    #[arg(
        long,
        default_value = "spiffe://cluster.local/ns/istio-system/sa/controller"
    )]
    pub controller_identity: String,
}

impl ControlArgs {
    /// The settings these flags give.
    pub fn config(&self) -> ControlPlaneSettings {
        ControlPlaneSettings {
            address: self.controller.clone(),
            root_cert: self.root_cert.clone(),
            token_file: self.token_file.clone(),
            server_identity: self.controller_identity.clone(),
            learned_roots: LearnedRoots::default(),
        }
    }
}

/// Why the controller could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Reading the roots or the token failed.
    #[error("{0}")]
    Config(String),
    /// Connecting failed.
    #[error("connecting to the controller at {address}: {reason}")]
    Connect {
        /// The controller address.
        address: String,
        /// Why.
        reason: String,
    },
}

/// A connected channel plus the credentials to attach to each request.
#[derive(Clone)]
pub struct ControlPlane {
    /// The underlying channel (shared by xDS and CA clients).
    pub channel: tonic::transport::Channel,
    token: Option<MetadataValue<Ascii>>,
    learned_roots: LearnedRoots,
}

impl ControlPlane {
    /// Connects to the controller once.
    ///
    /// The token is read afresh on every call, so a rotated token takes effect on the next
    /// connection; the roots on every dial, reconnections of this channel included, so a
    /// rotated trust bundle (file or learned) takes effect without a restart.
    pub async fn connect(config: &ControlPlaneSettings) -> Result<ControlPlane, ControlError> {
        let expected = ControllerName::parse(&config.server_identity)?;
        let trust = ControllerTrust {
            root_cert: config.root_cert.clone(),
            learned: config.learned_roots.clone(),
            expected,
        };
        // Fail now on unusable roots; each dial reads them again (see `Connector`).
        trust.tls_config()?;
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        let authority = authority(&config.address);
        let connect_error = |reason: String| ControlError::Connect {
            address: config.address.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| connect_error(format!("invalid address: {}", chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let connector = Connector {
            address: authority.into(),
            trust: Arc::new(trust),
        };
        let channel =
            tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect_with_connector(connector))
                .await
                .map_err(|_| connect_error(format!("timed out after {CONNECT_TIMEOUT:?}")))?
                .map_err(|e| connect_error(chain(&e)))?;
        Ok(ControlPlane {
            channel,
            token,
            learned_roots: config.learned_roots.clone(),
        })
    }

    /// The roots learned over xDS, shared with the settings this channel was made from.
    pub fn learned_roots(&self) -> &LearnedRoots {
        &self.learned_roots
    }

    /// Connects to the controller, retrying with jittered exponential backoff until it answers
    /// (it may start after the proxies, or be restarting). Dropping the future gives up.
    pub async fn connect_retrying(config: &ControlPlaneSettings) -> ControlPlane {
        let mut delay = RETRY_FIRST;
        loop {
            match Self::connect(config).await {
                Ok(control) => {
                    tracing::info!(controller = %config.address, "controller reached");
                    return control;
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {delay:?}");
                    let jitter = 0.8 + fastrand::f64() * 0.4;
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay = (delay * 2).min(RETRY_LAST);
                }
            }
        }
    }

    /// Adds `authorization: Bearer <token>` to `request` when a token is configured.
    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
    }
}

/// `host:port` from the configured address, which may also be written as a URL.
fn authority(address: &str) -> &str {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address);
    rest.trim_end_matches('/')
}

/// Reads at most `limit` bytes of `path` as UTF-8.
fn read_limited(path: &Path, limit: u64, what: &str) -> Result<String, ControlError> {
    use std::io::Read;
    let fail = |e: &dyn std::fmt::Display| {
        ControlError::Config(format!("reading the {what} {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(&e))?;
    if text.len() as u64 > limit {
        return Err(fail(&format!("larger than {limit} bytes")));
    }
    Ok(text)
}

fn read_roots(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, ControlError> {
    let pem = read_limited(path, MAX_ROOTS_BYTES, "root certificates")?;
    hbone::cert::certificates_from_pem(&pem, "root certificates")
        .map_err(|e| ControlError::Config(format!("root certificates {}: {e}", path.display())))
}

/// The bearer token in `path`, surrounding whitespace removed, as a header value.
fn read_token(path: &Path) -> Result<MetadataValue<Ascii>, ControlError> {
    let text = read_limited(path, MAX_TOKEN_BYTES, "token file")?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ControlError::Config(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    format!("Bearer {token}").parse().map_err(|_| {
        ControlError::Config(format!(
            "token file {} holds characters not allowed in a header",
            path.display()
        ))
    })
}

/// An error and its sources, `: `-separated (transport errors say little on their own).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How the controller's certificate is matched to the controller.
enum ControllerName {
    /// Its URI SAN must be this SPIFFE identity (the mesh's default).
    Spiffe(Identity),
    /// It must be valid for this DNS name or IP, as Istio's clients check istiod.
    Server(rustls_pki_types::ServerName<'static>),
}

impl ControllerName {
    /// A SPIFFE identity when `text` starts with `spiffe://`, else a DNS name or IP.
    fn parse(text: &str) -> Result<Self, ControlError> {
        let invalid = |e: &dyn std::fmt::Display| {
            ControlError::Config(format!("controller identity {text:?}: {e}"))
        };
        if text.starts_with("spiffe://") {
            return text.parse().map(Self::Spiffe).map_err(|e| invalid(&e));
        }
        rustls_pki_types::ServerName::try_from(text.to_owned())
            .map(Self::Server)
            .map_err(|_| invalid(&"neither a spiffe:// identity nor a DNS name or IP"))
    }
}

/// What the controller's certificate must chain to and name.
struct ControllerTrust {
    root_cert: PathBuf,
    learned: LearnedRoots,
    expected: ControllerName,
}

impl ControllerTrust {
    /// A TLS configuration trusting the root file's roots and the learned ones; the learned
    /// ones alone when the file cannot be read (a rotated ConfigMap mid-update).
    fn tls_config(&self) -> Result<rustls::ClientConfig, ControlError> {
        let roots = match read_roots(&self.root_cert) {
            Ok(roots) => self.learned.union(roots),
            Err(e) => match self.learned.get() {
                Some(learned) => learned.to_vec(),
                None => return Err(e),
            },
        };
        match &self.expected {
            ControllerName::Spiffe(identity) => hbone::tls::client_config_without_client_auth(
                &roots,
                std::slice::from_ref(identity),
            ),
            ControllerName::Server(_) => hbone::tls::client_config_verifying_name(&roots),
        }
        .map_err(|e| ControlError::Config(format!("TLS configuration: {e}")))
    }

    /// The server name the handshake names: the configured one when the controller is checked
    /// by name; else the address dialled (no SNI is sent, the identity is what is checked).
    fn server_name(
        &self,
        tcp: &TcpStream,
    ) -> std::io::Result<rustls_pki_types::ServerName<'static>> {
        Ok(match &self.expected {
            ControllerName::Server(name) => name.clone(),
            ControllerName::Spiffe(_) => {
                rustls_pki_types::ServerName::IpAddress(tcp.peer_addr()?.ip().into())
            }
        })
    }
}

/// Dials the controller: TCP, then TLS with a controller-specific client configuration built
/// for the dial. The URI tonic passes is ignored; the address is fixed at construction.
#[derive(Clone)]
struct Connector {
    address: Arc<str>,
    trust: Arc<ControllerTrust>,
}

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let address = self.address.clone();
        let trust = self.trust.clone();
        Box::pin(async move {
            let tls = trust
                .tls_config()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let tcp = TcpStream::connect(&*address).await?;
            tcp.set_nodelay(true)?;
            let name = trust.server_name(&tcp)?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests;
