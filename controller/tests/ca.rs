//! The CA driven by real tonic clients over loopback TLS.

mod xds_common;

use std::sync::Arc;
use std::time::Duration;

use controller::ca::{CertificateAuthority, Origin};
use controller::translate::{Published, Snapshot};
use hbone::{CertificateRequest, Identity, WorkloadCertificate};
use test_support::TempDir;
use test_support::control_plane::Controller;
use test_support::grpc::create_certificate;
use test_support::tls::mutual_handshake;
use tonic::Code;
use xds_common::*;

const WEB: &str = "spiffe://cluster.local/ns/app/sa/web";

async fn harness() -> Controller {
    start(empty(), CertificateAuthority::open(None, TD).unwrap()).await
}

fn empty() -> Published {
    Some(Arc::new(Snapshot::default()))
}

async fn create(
    h: &Controller,
    token: &str,
    identity: &str,
    ttl: i64,
    impersonate: Option<&str>,
) -> Result<WorkloadCertificate, tonic::Status> {
    let id: Identity = identity.parse().unwrap();
    let csr = CertificateRequest::generate(&id).unwrap();
    let chain = create_certificate(h.channel(), token, csr.csr_pem(), ttl, impersonate).await?;
    Ok(csr.into_certificate(&chain).expect("chain assembles"))
}

#[tokio::test]
async fn issues_own_identity_with_a_verifying_chain() {
    let h = harness().await;
    let before = counter("controller_ca_certificates_issued_total");
    let web = create(&h, "app", WEB, 3600, None).await.unwrap();
    assert_eq!(web.identity().to_string(), WEB);
    let lifetime = web.expires_at().duration_since(web.not_before()).unwrap();
    assert!(lifetime >= Duration::from_secs(3600) && lifetime < Duration::from_secs(3800));
    let zt = create(&h, "zt-node1", ZTUNNEL, 0, None).await.unwrap();
    let lifetime = zt.expires_at().duration_since(zt.not_before()).unwrap();
    assert!(
        lifetime >= Duration::from_secs(24 * 3600),
        "default TTL is 24 h"
    );
    mutual_handshake(&zt, &web).await;
    assert!(counter("controller_ca_certificates_issued_total") >= before + 2.0);
}

#[tokio::test]
async fn node_proxy_impersonates_pods_on_its_node_only() {
    let h = harness().await;
    h.pods.add("node1", "app", "web");
    let cert = create(&h, "zt-node1", WEB, 3600, Some(WEB)).await.unwrap();
    assert_eq!(cert.identity().to_string(), WEB);

    let err = create(&h, "zt-node2", WEB, 3600, Some(WEB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no such pod on node2");

    let other = "spiffe://cluster.local/ns/app/sa/db";
    let err = create(&h, "zt-node1", other, 3600, Some(other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "no pod runs as db");
}

#[tokio::test]
async fn non_node_callers_cannot_impersonate() {
    let h = harness().await;
    h.pods.add("node1", "istio-system", "ztunnel");
    let before = counter("controller_ca_certificates_refused_total");
    let err = create(&h, "app", ZTUNNEL, 3600, Some(ZTUNNEL))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Without impersonation, a CSR for someone else's identity is refused as well.
    let err = create(&h, "app", ZTUNNEL, 3600, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(counter("controller_ca_certificates_refused_total") >= before + 2.0);
}

#[tokio::test]
async fn bad_token_and_long_ttl_are_refused() {
    let h = harness().await;
    let err = create(&h, "nope", WEB, 3600, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = create(&h, "app", WEB, 91 * 24 * 3600, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = create_certificate(h.channel(), "app", "not a csr", 60, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn persisted_root_survives_restart_and_rotation() {
    let scratch = TempDir::new("controller-ca");
    let dir = scratch.join("ca");
    let first = CertificateAuthority::open(Some(&dir), TD).unwrap();
    assert_eq!(first.origin(), Origin::Generated);
    let roots = first.roots_pem().unwrap();
    drop(first);

    let second = CertificateAuthority::open(Some(&dir), TD).unwrap();
    assert_eq!(second.origin(), Origin::Reloaded);
    assert_eq!(second.roots_pem().unwrap(), roots);

    // Certificates issued before a restart verify against the reloaded CA's issues.
    let h = start(empty(), second).await;
    let web = create(&h, "app", WEB, 3600, None).await.unwrap();
    assert_eq!(web.roots().len(), 1);

    // Rotation: publish the next root first; certificates issued from then on carry both
    // roots, so they keep trusting peers once signing switches.
    let next = hbone::Authority::generate_root(TD, Duration::from_secs(3600)).unwrap();
    h.ca.add_trusted_root(&next.root_pem()).unwrap();
    assert_eq!(h.ca.roots_pem().unwrap().len(), 2);
    let before_switch = create(&h, "app", WEB, 3600, None).await.unwrap();
    assert_eq!(before_switch.roots().len(), 2);
    h.ca.rotate(next).unwrap();
    let rotated = create(&h, "app", WEB, 3600, None).await.unwrap();
    assert_eq!(rotated.roots().len(), 2);
    mutual_handshake(&before_switch, &rotated).await;
    mutual_handshake(&rotated, &before_switch).await;
    // A peer still holding only the old root trusts certificates of the old signer.
    mutual_handshake(&web, &before_switch).await;

    let third = CertificateAuthority::open(Some(&dir), TD).unwrap();
    assert_eq!(third.roots_pem().unwrap().len(), 2, "rotation is persisted");
}
