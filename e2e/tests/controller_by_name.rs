//! The sandbox's real controller process reached as Istio's ztunnel reaches istiod: TLS
//! verified by server name (`istiod.istio-system.svc`, or the controller's IP) against the
//! mesh root, then `CreateCertificate` with a node token and `ImpersonatedIdentity`; and the
//! mesh's own proxy client checking the controller by that DNS name instead of its SPIFFE
//! identity, both against the same certificate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use e2e::{Options, Sandbox};
use hbone::cert::{certificates_from_pem, subject_alt_names};
use hbone::{CertificateRequest, Identity};
use proxy_core::control::ControlPlane;
use proxy_core::settings::ControlPlaneSettings;
use proxy_core::state::ProxyState;
use proxy_core::xds::{self, ClientIdentity};
use rustls_pki_types::{CertificateDer, ServerName};
use test_support::grpc::create_certificate;
use test_support::tls::{connect_named, istio_control_plane_client, named_channel};
use tokio::sync::watch;

const NS: &str = "byname";
const WEB: &str = "spiffe://cluster.local/ns/byname/sa/web";
use e2e::CONTROLLER_IDENTITY as CONTROLLER;
/// Upper bound for config to arrive; generous, as the machine may be busy.
const WAIT: Duration = Duration::from_secs(30);

/// One pod running as `web` on node1, so node1's proxy may ask for `web`'s certificate.
fn manifests() -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {NS}, labels: {{app: web}}}}
spec:
  nodeName: node1
  serviceAccountName: web
  containers: [{{name: c, command: [sleep, infinity]}}]
"#
    )
}

/// Asks for `web`'s certificate on node1's behalf over `channel`, as Istio's ztunnel does;
/// returns the leaf's subject alternative names once the chain assembles with the key.
async fn web_certificate_sans(channel: tonic::transport::Channel, token: &str) -> Vec<String> {
    let web: Identity = WEB.parse().unwrap();
    let csr = CertificateRequest::generate(&web).unwrap();
    let chain = create_certificate(channel, token, csr.csr_pem(), 3600, Some(WEB))
        .await
        .expect("the CA answers");
    let cert = csr.into_certificate(&chain).expect("the chain assembles");
    assert_eq!(cert.identity(), &web);
    subject_alt_names(&cert.chain()[0]).unwrap()
}

/// Runs the mesh's xDS client against the controller checked as `controller_identity`, until
/// it has synced and knows the `web` pod at `web_ip`.
async fn proxy_syncs(sb: &Sandbox, controller_identity: &str, web_ip: IpAddr) {
    let settings = ControlPlaneSettings {
        address: sb.controller_xds_addr().to_string(),
        root_cert: sb.controller_info().unwrap().root_cert,
        token_file: Some(sb.controller_info().unwrap().tokens_dir.join("node1")),
        server_identity: controller_identity.into(),
        learned_roots: Default::default(),
    };
    ControlPlane::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("{controller_identity}: {e}"));
    let state = ProxyState::new();
    let (stop, shutdown) = watch::channel(false);
    let node = ClientIdentity {
        node_id: xds::node_id("172.18.0.2", "ztunnel-e2e", "istio-system"),
        node_name: "node1".into(),
        cluster_id: "Kubernetes".into(),
    };
    let client = tokio::spawn(xds::run(settings, node, state.clone(), shutdown));
    let mut changes = state.changes();
    let synced = tokio::time::timeout(WAIT, async {
        while !(state.is_synced() && state.workload_by_ip(web_ip).is_some()) {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        synced.is_ok(),
        "{controller_identity}: no sync within {WAIT:?}"
    );
    stop.send(true).unwrap();
    tokio::time::timeout(WAIT, client)
        .await
        .expect("the client stops")
        .unwrap();
}

#[test]
fn istio_style_clients_verify_the_controller_by_name_and_ip() {
    let opts = Options {
        ztunnel: false,
        ..Options::default()
    };
    let sb = Sandbox::up_with(&manifests(), opts).expect("sandbox up");
    let roots: Vec<CertificateDer<'static>> =
        certificates_from_pem(&sb.root_cert_pem().unwrap(), "root").unwrap();
    let token = sb.node_token("node1").unwrap();
    let addr = sb.controller_xds_addr();
    let controller_ip = sb.controller_ip();
    let web_ip = IpAddr::V4(sb.pod_ip("web").unwrap());
    let name = |n: &str| ServerName::try_from(n.to_owned()).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The certificate the controller presents: its identity, the istiod Service's names
        // and the sandbox's address for it.
        let config = Arc::new(istio_control_plane_client(&roots));
        let tls = connect_named(addr, config.clone(), name("istiod.istio-system.svc"))
            .await
            .expect("verifies as istiod.istio-system.svc");
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        assert_eq!(
            subject_alt_names(leaf).unwrap(),
            [
                format!("URI:{CONTROLLER}"),
                "DNS:istiod.istio-system.svc".into(),
                "DNS:istiod.istio-system.svc.cluster.local".into(),
                format!("IP:{controller_ip}"),
            ]
        );

        // The mesh's proxy client, by DNS name and by SPIFFE identity, against the same
        // certificate (once synced, the controller also knows web's pod for its CA).
        proxy_syncs(&sb, "istiod.istio-system.svc", web_ip).await;
        proxy_syncs(&sb, CONTROLLER, web_ip).await;

        // CreateCertificate answered over each name; the workload certificate carries its
        // identity only. (The host reaches the controller through the sandbox's forwarder; a
        // client dialling its address on the sandbox network checks that IP, as here.)
        for server in [
            name("istiod.istio-system.svc"),
            name("istiod.istio-system.svc.cluster.local"),
            ServerName::IpAddress(IpAddr::V4(controller_ip).into()),
        ] {
            let channel = named_channel(addr, istio_control_plane_client(&roots), server);
            assert_eq!(
                web_certificate_sans(channel, &token).await,
                [format!("URI:{WEB}")]
            );
        }

        // A name the controller does not carry is refused by the client.
        let refused = connect_named(addr, config, name("istiod.other.svc"))
            .await
            .expect_err("istiod.other.svc is not the controller");
        assert!(
            refused.to_string().contains("not valid for name"),
            "{refused}"
        );
    });
}
