//! Workload certificates through the real controller channel (`ControlPlane::connect`: TLS to
//! the controller, bearer token from a file) and the real controller CA.

use std::time::Duration;

use hbone::Identity;
use proxy_core::control::ControlPlane;
use proxy_core::identity::{CertManager, CertSettings};
use proxy_core::settings::ControlPlaneSettings;
use test_support::control_plane::Controller;
use test_support::tls::mutual_handshake;

const NODE: &str = "node1";
/// The node proxy's bearer token.
const TOKEN: &str = "ztunnel-node1";

async fn control_plane(controller: &Controller) -> ControlPlane {
    ControlPlane::connect(&ControlPlaneSettings {
        address: controller.addr.to_string(),
        root_cert: controller.root_cert(),
        token_file: Some(controller.token_file(TOKEN)),
        server_identity: "spiffe://cluster.local/ns/istio-system/sa/controller".into(),
        learned_roots: Default::default(),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn certificates_for_local_pods_over_the_control_plane() {
    let controller = Controller::builder()
        .token(
            TOKEN,
            "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
            Some(NODE),
        )
        .start()
        .await;
    controller.pods.add(NODE, "shop", "orders");
    controller.pods.add(NODE, "shop", "cart");
    let control = control_plane(&controller).await;
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
    mutual_handshake(&orders_cert, &cart_cert).await;

    // An identity without a pod on this node is refused by the CA, and the refusal surfaces.
    let payments: Identity = "spiffe://cluster.local/ns/shop/sa/payments"
        .parse()
        .unwrap();
    let err = manager.fetch(&payments).await.unwrap_err();
    assert!(err.to_string().contains("Unauthenticated"), "{err}");
}
