//! The trust bundle over xDS: applied to held certificates, and a change of signer renewing
//! them ahead of schedule.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use api::trust::TrustBundle;
use hbone::Authority;
use hbone::cert::certificate_to_pem;

use super::harness::Controller;
use super::*;

fn bundle(
    roots: &[&rustls_pki_types::CertificateDer<'static>],
    within: Option<Duration>,
) -> api::prost_types::Any {
    api::pack(&TrustBundle {
        roots: roots.iter().map(|r| certificate_to_pem(r)).collect(),
        reissue_within: within.map(|d| d.try_into().unwrap()),
        signer: Vec::new(),
    })
}

#[tokio::test]
async fn a_bundle_is_trusted_at_once_and_a_new_signer_renews_certificates_early() {
    let controller = Controller::start(Duration::ZERO).await;
    controller.add_pod("shop", "orders");
    let orders = id("shop", "orders");
    let manager = manager(&controller, Duration::from_secs(3600), 8);
    let handler = manager.trust_bundle_subscription().handler;
    manager.prefetch(&orders);
    let mut follow = manager.watch(&orders);
    let first = within("the first certificate", next_cert(&mut follow, None)).await;
    let old = first.roots()[0].clone();
    let next = Authority::generate_root(harness::TD, Duration::from_secs(3600)).unwrap();
    let new = next.roots()[0].clone();

    // Phase 1: both roots, the old one signing: trusted at once, nothing renewed.
    controller
        .ca()
        .add_trusted_root(&certificate_to_pem(&new))
        .unwrap();
    handler
        .apply(
            "default",
            &bundle(&[&old, &new], Some(Duration::from_millis(1))),
        )
        .unwrap();
    let both = within("the bundle applied", next_cert(&mut follow, Some(&first))).await;
    assert_eq!(serial(&both), serial(&first), "the same certificate");
    assert_eq!(both.roots(), [old.clone(), new.clone()]);
    assert_eq!(
        manager.trust_bundle_dump()["roots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Phase 3: the new root signs: the certificate is renewed ahead of its half-life, and
    // the renewed one trusts the bundle, not only what came with it.
    controller.ca().rotate(next).unwrap();
    handler
        .apply(
            "default",
            &bundle(&[&new, &old], Some(Duration::from_millis(1))),
        )
        .unwrap();
    let reordered = within("the new order", next_cert(&mut follow, Some(&both))).await;
    assert_eq!(serial(&reordered), serial(&first));
    let renewed = within(
        "the early renewal",
        next_cert(&mut follow, Some(&reordered)),
    )
    .await;
    assert_ne!(serial(&renewed), serial(&first));
    assert_eq!(renewed.issuing_root(), Some(&new));
    assert_eq!(renewed.roots(), [new.clone(), old.clone()]);
    assert_eq!(controller.auth.calls.load(Ordering::SeqCst), 2);

    // Bad bundles are refused (NACKed) and the last one stays.
    let empty = bundle(&[], None);
    assert!(
        handler
            .apply("default", &empty)
            .unwrap_err()
            .contains("no root")
    );
    let garbage = api::pack(&TrustBundle {
        roots: vec!["not a certificate".into()],
        ..Default::default()
    });
    assert!(
        handler
            .apply("default", &garbage)
            .unwrap_err()
            .starts_with("root 0:")
    );
    handler.remove("default");
    assert_eq!(
        manager.trust_bundle_dump()["roots"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let current = manager.fetch(&orders).await.unwrap();
    assert!(Arc::ptr_eq(&current, &renewed));
}
