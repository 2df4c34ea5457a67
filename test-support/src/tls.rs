//! TLS over loopback with the mesh's own configurations.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hbone::{Identity, WorkloadCertificate};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

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
