//! Workload certificates through the real controller channel (`ControlPlane::connect`: TLS to
//! the controller, bearer token from a file) and the real controller CA.

#[path = "../src/identity/tests/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::Controller;
use hbone::{Identity, WorkloadCertificate};
use proxy_core::config::ControlPlaneConfig;
use proxy_core::control::ControlPlane;
use proxy_core::identity::{CertManager, CertSettings};
use test_support::TempDir;
use tokio::net::{TcpListener, TcpStream};

async fn control_plane(controller: &Controller, dir: &TempDir) -> ControlPlane {
    let root_cert = dir.join("root-cert.pem");
    let token_file = dir.join("token");
    std::fs::write(&root_cert, controller.roots_pem()).unwrap();
    std::fs::write(&token_file, format!("{}\n", harness::TOKEN)).unwrap();
    ControlPlane::connect(&ControlPlaneConfig {
        address: controller.addr.to_string(),
        root_cert,
        token_file: Some(token_file),
        server_identity: "spiffe://cluster.local/ns/istio-system/sa/controller".into(),
    })
    .await
    .unwrap()
}

/// Completes a mutual TLS handshake: `server` must accept `client`'s chain and the other way
/// round, which proves the issued chains and trust bundles fit together.
async fn handshake(server: &WorkloadCertificate, client: &WorkloadCertificate) {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(Arc::new(hbone::tls::server_config(server).unwrap()));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        hbone::tls::client_config(client, &[server.identity().clone()]).unwrap(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.unwrap();
        hbone::tls::peer_identity(tls.get_ref().1.peer_certificates())
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await.unwrap();
    assert_eq!(accept.await.unwrap().as_ref(), Some(client.identity()));
}

#[tokio::test]
async fn certificates_for_local_pods_over_the_control_plane() {
    let controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    controller.add_pod("shop", "cart");
    let dir = TempDir::new("proxy-core-identity");
    let control = control_plane(&controller, &dir).await;
    let manager = CertManager::new(
        control,
        CertSettings {
            ttl: Duration::from_secs(3600),
            max_in_flight: 8,
        },
    );

    let orders: Identity = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
    let cart: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
    manager.prefetch(&orders);
    manager.prefetch(&cart);
    let orders_cert = manager.fetch(&orders).await.unwrap();
    let cart_cert = manager.fetch(&cart).await.unwrap();
    assert_eq!(orders_cert.identity(), &orders);
    assert_eq!(cart_cert.identity(), &cart);
    assert!(manager.all_ready());
    handshake(&orders_cert, &cart_cert).await;

    // An identity without a pod on this node is refused by the CA, and the refusal surfaces.
    let payments: Identity = "spiffe://cluster.local/ns/shop/sa/payments"
        .parse()
        .unwrap();
    let err = manager.fetch(&payments).await.unwrap_err();
    assert!(err.to_string().contains("Unauthenticated"), "{err}");
}
