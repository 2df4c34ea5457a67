//! The one call the node agent makes to the Kubernetes API server: a `GET` of one object, as
//! the pod's ServiceAccount (the token and CA Kubernetes mounts into the pod), over HTTPS to
//! `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT`; or, given a URL, to that server (plain
//! `http://` for tests).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where Kubernetes mounts the ServiceAccount's credentials in a pod.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How long one call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a DaemonSet is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    /// Not running in a pod, or the URL given is not one.
    #[error("Kubernetes API server: {0}")]
    Config(String),
    /// Reading the token or the CA.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("Kubernetes API server {server}: {reason}")]
    Call {
        /// `host:port`.
        server: String,
        /// What went wrong.
        reason: String,
    },
}

/// A Kubernetes API server and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct KubeApi {
    host: String,
    port: u16,
    /// TLS to the server, with the cluster's CA; `None` for plain HTTP.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The bearer token's file, read at each call (kubelet rotates it).
    token: Option<PathBuf>,
}

impl KubeApi {
    /// The API server of the cluster this pod runs in.
    pub fn in_cluster() -> Result<Self, KubeApiError> {
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| KubeApiError::Config(format!("{name} is not set")))
        };
        let host = env("KUBERNETES_SERVICE_HOST")?;
        let port = env("KUBERNETES_SERVICE_PORT")?
            .parse()
            .map_err(|_| KubeApiError::Config("KUBERNETES_SERVICE_PORT is not a port".into()))?;
        let dir = PathBuf::from(SERVICE_ACCOUNT_DIR);
        let ca = dir.join("ca.crt");
        let pem = std::fs::read_to_string(&ca).map_err(|source| KubeApiError::Read {
            path: ca.display().to_string(),
            source,
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in hbone::cert::certificates_from_pem(&pem, "the cluster CA")
            .map_err(|e| KubeApiError::Config(e.to_string()))?
        {
            roots
                .add(cert)
                .map_err(|e| KubeApiError::Config(format!("the cluster CA: {e}")))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(hbone::crypto::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| KubeApiError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            tls: Some(Arc::new(tls)),
            token: Some(dir.join("token")),
        })
    }

    /// A server at `http://host:port`, without credentials.
    pub fn plain(url: &str) -> Result<Self, KubeApiError> {
        let bad = || KubeApiError::Config(format!("{url:?} is not http://HOST:PORT"));
        let authority = url.strip_prefix("http://").ok_or_else(bad)?;
        let authority = authority.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_owned(),
            port: port.parse().map_err(|_| bad())?,
            tls: None,
            token: None,
        })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `GET path`: the status and the body.
    pub async fn get(&self, path: &str) -> Result<(u16, Bytes), KubeApiError> {
        let call = |reason: String| KubeApiError::Call {
            server: self.server(),
            reason,
        };
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(path)).await {
            Ok(result) => result.map_err(call),
            Err(_) => Err(call(format!("no answer in {} s", CALL_TIMEOUT.as_secs()))),
        }
    }

    async fn exchange(&self, path: &str) -> Result<(u16, Bytes), String> {
        let mut request = http::Request::get(path)
            .header(http::header::HOST, self.server())
            .header(http::header::ACCEPT, "application/json");
        if let Some(file) = &self.token {
            let token = std::fs::read_to_string(file)
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            );
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        match &self.tls {
            None => send(tcp, request).await,
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(stream, request).await
            }
        }
    }
}

/// Sends `request` over `io` with HTTP/1.1 and reads the whole answer (bounded).
async fn send<IO>(io: IO, request: http::Request<Empty<Bytes>>) -> Result<(u16, Bytes), String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    let result = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map(|body| (status, body.to_bytes()))
                .map_err(|e| format!("reading the answer: {e}"))
        }
        Err(e) => Err(e),
    };
    driver.abort();
    result
}
