//! TLS over loopback with the mesh's own configurations, and as Istio's clients configure it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{Identity, WorkloadCertificate};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Dials `addr` and completes TLS with `config`, naming the server by its IP address, as mesh
/// clients do (they check the peer's SPIFFE identity, not a name).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// The client configuration Istio's ztunnel builds for its control plane (XDS and CA): rustls'
/// standard WebPKI verifier over `roots`, which checks the chain and that the certificate is
/// valid for the server name dialled; TLS 1.3 with AES-GCM; no client certificate; ALPN `h2`.
pub fn istio_control_plane_client(roots: &[CertificateDer<'static>]) -> ClientConfig {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("a usable root");
    }
    let mut config = ClientConfig::builder_with_provider(hbone::crypto::provider())
        // Istio's default (TLS 1.2 only when TLS12_ENABLED is set).
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Dials `addr` and completes TLS with `config`, naming the server `name` (sent as SNI when it
/// is a DNS name): a client that reached the server by that name.
pub async fn connect_named(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A gRPC channel to `addr` that connects on first use with [`connect_named`].
pub fn named_channel(addr: SocketAddr, config: ClientConfig, name: ServerName<'static>) -> Channel {
    let config = Arc::new(config);
    Endpoint::from_static("http://server.invalid").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let (config, name) = (config.clone(), name.clone());
            async move { connect_named(addr, config, name).await.map(TokioIo::new) }
        },
    ))
}

/// How each side of a [`handshake_with`] ended.
#[derive(Debug)]
pub struct Handshake {
    /// The client's side.
    pub client: io::Result<()>,
    /// The server's side: the identity the client presented, if it presented one.
    pub server: io::Result<Option<Identity>>,
}

/// One TLS handshake over a loopback connection between a server with `server` and a client
/// with `client`, both sides run to their end.
pub async fn handshake_with(server: ServerConfig, client: ClientConfig) -> Handshake {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("the port's address");
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let tls = acceptor.accept(tcp).await?;
        Ok(hbone::tls::peer_identity(
            tls.get_ref().1.peer_certificates(),
        ))
    });
    let client = connect(addr, Arc::new(client)).await.map(drop);
    let server = accept.await.expect("the accepting task ends");
    Handshake { client, server }
}

/// Completes a mutual TLS handshake with hbone's workload configurations: `server` must
/// accept `client`'s chain and the other way round, which proves the issued chains and trust
/// bundles fit together; the server sees `client`'s identity.
pub async fn mutual_handshake(server: &WorkloadCertificate, client: &WorkloadCertificate) {
    let done = handshake_with(
        hbone::tls::server_config(server).expect("a server configuration"),
        hbone::tls::client_config(client, &[server.identity().clone()])
            .expect("a client configuration"),
    )
    .await;
    done.client.expect("the client completes the handshake");
    let seen = done.server.expect("the server completes the handshake");
    assert_eq!(seen.as_ref(), Some(client.identity()));
}
