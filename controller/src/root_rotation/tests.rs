//! The phases against a real CA folder, with xDS clients simulated by their ACKs.

use std::path::Path;
use std::time::Duration;

use hbone::cert::certificates_from_pem;
use test_support::TempDir;

use super::*;
use crate::ca::Origin;
use crate::ca::rotation::{self, NEXT};
use crate::ca::rotation_store::{FolderStore, generated_material};
use crate::ca::store::{ROOT_CERT, ROOT_KEY};
use crate::server::controller_identity;
use crate::translate::Snapshot;
use crate::xds::serve_with_trust_bundle;
use hbone::Authority;

const OPTIONS: RotateOptions = RotateOptions {
    new_root_ttl: Duration::from_secs(3600),
    reissue_within: Duration::ZERO,
};

/// A rotation over the CA in `dir`, serving its bundle through the real join with a
/// translated snapshot; reconnecting proxies are believed at once.
async fn rotation(dir: &Path, clients: &Clients) -> (RootRotation, Arc<CertificateAuthority>) {
    let ca = Arc::new(CertificateAuthority::open(Some(dir), "cluster.local").unwrap());
    let identity = controller_identity("cluster.local", "istio-system").unwrap();
    let serving = ServingTls::issue(ca.clone(), identity).unwrap();
    let (translated_tx, translated) = watch::channel(Some(Arc::new(Snapshot::default())));
    let (served_tx, served) = watch::channel(None);
    let store: Arc<dyn RotationStore> = Arc::new(FolderStore::new(dir));
    let (mut rotation, bundle) = RootRotation::new(
        ca.clone(),
        Some(store),
        clients.clone(),
        served,
        serving,
        Leadership::always(),
    )
    .await
    .unwrap();
    Arc::get_mut(&mut rotation.inner).unwrap().settle = Duration::ZERO;
    tokio::spawn(async move {
        serve_with_trust_bundle(translated, bundle, served_tx).await;
        drop(translated_tx);
    });
    (rotation, ca)
}

/// Has `client` ACK the bundle being served.
async fn ack(rotation: &RootRotation, client: &crate::xds::ClientEntry) {
    let version = served_version(rotation).await;
    client.sent(api::TRUST_BUNDLE_TYPE_URL, &version);
    client.acked(api::TRUST_BUNDLE_TYPE_URL, &version);
}

/// Waits for the join to serve the latest bundle; its system version.
async fn served_version(rotation: &RootRotation) -> String {
    let mut served = rotation.inner.served.clone();
    let want = rotation.inner.bundle.borrow().clone();
    let snapshot = served
        .wait_for(|s| {
            s.as_ref().is_some_and(|s| {
                s.of_type(api::TRUST_BUNDLE_TYPE_URL)
                    .any(|(_, r)| r.body == want)
            })
        })
        .await
        .unwrap()
        .clone()
        .unwrap();
    snapshot.system_version(api::TRUST_BUNDLE_TYPE_URL)
}

fn roots_in(dir: &Path) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    certificates_from_pem(
        &std::fs::read_to_string(dir.join(ROOT_CERT)).unwrap(),
        "roots",
    )
    .unwrap()
}

fn issuing_root(ca: &CertificateAuthority) -> rustls_pki_types::CertificateDer<'static> {
    let id = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
    let cert = ca.issue(&id, Duration::from_secs(60)).unwrap();
    cert.issuing_root().unwrap().clone()
}

#[tokio::test]
async fn a_rotation_runs_every_phase_and_resumes_after_a_restart() {
    let dir = TempDir::new("root-rotation");
    let clients = Clients::default();
    let proxy = clients.connect("spiffe://cluster.local/ns/istio-system/sa/ztunnel");
    proxy.named("ztunnel~10.0.0.1~ztunnel-node1.istio-system~istio-system.svc.cluster.local");
    let agent = clients.connect("spiffe://cluster.local/ns/istio-system/sa/ztunnel");
    let (rotation, ca) = rotation(dir.path(), &clients).await;
    ack(&rotation, &proxy).await;
    let old = ca.roots_pem().unwrap()[0].clone();

    // Phase 1: both roots published, the old one signing; the proxy has not loaded it.
    let status = rotation.start(OPTIONS).await.unwrap();
    assert_eq!(status.state.phase, Phase::Published);
    assert_eq!(status.roots.len(), 2);
    assert!(matches!(
        rotation.start(OPTIONS).await,
        Err(RotationError::InProgress(Phase::Published))
    ));
    let old_der = certificates_from_pem(&old, "old").unwrap().remove(0);
    assert_eq!(roots_in(dir.path())[0], old_der);
    assert_eq!(roots_in(dir.path()).len(), 2);
    assert!(dir.path().join(NEXT).exists());
    served_version(&rotation).await;
    rotation.inner.advance().await.unwrap();
    let status = rotation.status();
    assert_eq!(status.state.phase, Phase::Published, "the proxy is stale");
    assert_eq!(status.proxies.stale.len(), 1);
    assert_eq!(status.proxies.not_subscribed, 1, "the agent");
    assert!(
        status.waiting_for.contains("1 proxies"),
        "{}",
        status.waiting_for
    );

    // Phase 3 once the proxy ACKed: the new root signs and the bundle asks for renewals.
    ack(&rotation, &proxy).await;
    rotation.inner.advance().await.unwrap();
    let status = rotation.status();
    assert_eq!(status.state.phase, Phase::Reissuing);
    let new_der = certificates_from_pem(&status.state.new_roots, "new")
        .unwrap()
        .remove(0);
    assert_eq!(issuing_root(&ca), new_der);
    assert_eq!(roots_in(dir.path()), [new_der.clone(), old_der.clone()]);
    let bundle: TrustBundle = api::unpack(&rotation.inner.bundle.borrow()).unwrap();
    assert_eq!(
        bundle.reissue_within,
        Some(Duration::ZERO.try_into().unwrap())
    );

    // A restart in phase 3 resumes it: the new root still signs, both are trusted.
    drop(rotation);
    let (rotation, ca) = self::rotation(dir.path(), &clients).await;
    assert_eq!(rotation.status().state.phase, Phase::Reissuing);
    assert_eq!(issuing_root(&ca), new_der);
    assert_eq!(ca.roots_pem().unwrap().len(), 2);

    // Phase 4 once the old root's leaves cannot be valid and the proxy holds the bundle.
    ack(&rotation, &proxy).await;
    while now_secs() < rotation.status().state.drop_after {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rotation.inner.advance().await.unwrap();
    let status = rotation.status();
    assert_eq!(status.state.phase, Phase::Idle);
    assert!(status.state.completed_at > 0);
    assert_eq!(roots_in(dir.path()), [new_der]);
    assert!(!dir.path().join(NEXT).exists());
    let bundle: TrustBundle = api::unpack(&rotation.inner.bundle.borrow()).unwrap();
    assert_eq!(bundle.roots.len(), 1);
    assert_eq!(bundle.reissue_within, None);
    drop(agent);
}

#[tokio::test]
async fn a_stop_between_two_writes_is_repaired_from_the_record() {
    let dir = TempDir::new("root-rotation-repair");
    let clients = Clients::default();
    let (rotation, _) = rotation(dir.path(), &clients).await;
    rotation.start(OPTIONS).await.unwrap();
    served_version(&rotation).await;
    rotation.inner.advance().await.unwrap();
    assert_eq!(rotation.status().state.phase, Phase::Reissuing);
    let state = rotation.status().state;
    drop(rotation);
    // As if stopped after the record but before the files: the old key and roots are back.
    let next_key = std::fs::read_to_string(dir.path().join(NEXT).join(ROOT_KEY)).unwrap();
    std::fs::write(
        dir.path().join(ROOT_CERT),
        format!("{}{}", state.old_roots, state.new_roots),
    )
    .unwrap();
    let other = Authority::generate_root("cluster.local", Duration::from_secs(60)).unwrap();
    std::fs::write(dir.path().join(ROOT_KEY), other.key_pem()).unwrap();
    let (_, ca) = self::rotation(dir.path(), &clients).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join(ROOT_KEY)).unwrap(),
        next_key
    );
    let new_der = certificates_from_pem(&state.new_roots, "new")
        .unwrap()
        .remove(0);
    assert_eq!(issuing_root(&ca), new_der);
}

#[test]
fn material_staged_but_never_recorded_is_discarded_and_a_cut_completion_finishes() {
    let dir = TempDir::new("root-rotation-staged");
    let current = CertificateAuthority::open(Some(dir.path()), "cluster.local")
        .unwrap()
        .roots_pem()
        .unwrap();
    // A completed rotation's record, then a new root staged but stopped before phase 1.
    let completed = State {
        new_roots: current.concat(),
        completed_at: 1,
        ..State::default()
    };
    rotation::save(dir.path(), &completed).unwrap();
    let next = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    rotation::stage_material(dir.path(), &generated_material(&next)).unwrap();
    let ca = CertificateAuthority::open(Some(dir.path()), "cluster.local").unwrap();
    assert_eq!(ca.roots_pem().unwrap(), current, "the old root still signs");
    assert!(!dir.path().join(NEXT).exists(), "the staged root is gone");

    // Phase 3 installed, then stopped after recording the completion: it finishes.
    rotation::stage_material(dir.path(), &generated_material(&next)).unwrap();
    let reissuing = State {
        phase: Phase::Reissuing,
        old_roots: current.concat(),
        new_roots: next.root_pem(),
        ..State::default()
    };
    rotation::apply(dir.path(), &reissuing).unwrap();
    let done = State {
        phase: Phase::Idle,
        completed_at: 2,
        ..reissuing
    };
    rotation::save(dir.path(), &done).unwrap();
    let ca = CertificateAuthority::open(Some(dir.path()), "cluster.local").unwrap();
    assert_eq!(ca.roots_pem().unwrap(), next.roots_pem());
    assert!(!dir.path().join(NEXT).exists());
}

/// Writes an intermediate of `root` in the plug-in layout into `dir/name`.
fn plug_in_folder(dir: &Path, name: &str, root: &Authority, key_of_another: bool) {
    let now = std::time::SystemTime::now();
    let hour = Duration::from_secs(3600);
    let (key, cert) = root
        .issue_intermediate("mesh intermediate", now - hour, now + hour)
        .unwrap();
    let key = if key_of_another {
        root.issue_intermediate("other", now - hour, now + hour)
            .unwrap()
            .0
    } else {
        key
    };
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("ca-key.pem"), key).unwrap();
    std::fs::write(folder.join("ca-cert.pem"), &cert).unwrap();
    std::fs::write(
        folder.join("cert-chain.pem"),
        format!("{cert}{}", root.root_pem()),
    )
    .unwrap();
    std::fs::write(folder.join(ROOT_CERT), root.root_pem()).unwrap();
}

#[tokio::test]
async fn a_plugged_in_intermediate_replaces_the_signer_and_bad_material_is_refused() {
    let dir = TempDir::new("root-rotation-replace");
    let clients = Clients::default();
    let (rotation, ca) = rotation(dir.path(), &clients).await;
    let generated = ca.roots_pem().unwrap().concat();
    let offline = Authority::generate_root("cluster.local", Duration::from_secs(7200)).unwrap();

    // A key that is not the certificate's: refused, naming the folder; nothing changes.
    plug_in_folder(dir.path(), "bad", &offline, true);
    let err = rotation
        .replace("bad", Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad") && err.contains("does not belong"),
        "{err}"
    );
    assert_eq!(rotation.status().state.phase, Phase::Idle);
    assert_eq!(ca.roots_pem().unwrap().concat(), generated);
    assert!(matches!(
        rotation.replace("../elsewhere", Duration::ZERO).await,
        Err(RotationError::Folder(_))
    ));

    // A good intermediate under another root: both roots published, then it signs.
    plug_in_folder(dir.path(), "incoming", &offline, false);
    let status = rotation.replace("incoming", Duration::ZERO).await.unwrap();
    assert_eq!(status.state.phase, Phase::Published);
    assert_eq!(status.roots.len(), 2);
    served_version(&rotation).await;
    rotation.inner.advance().await.unwrap();
    assert_eq!(rotation.status().state.phase, Phase::Reissuing);
    assert_eq!(ca.origin(), Origin::PluggedIn);
    let id = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
    let leaf = ca.issue(&id, Duration::from_secs(60)).unwrap();
    assert_eq!(leaf.chain().len(), 2, "leaf and the intermediate");
    assert_eq!(leaf.issuing_root(), Some(&offline.roots()[0]));
    let bundle: TrustBundle = api::unpack(&rotation.inner.bundle.borrow()).unwrap();
    assert_eq!(bundle.signer, leaf.chain()[1].to_vec());
    assert!(
        !dir.path().join(ROOT_KEY).exists(),
        "the generated root's key is gone"
    );

    while now_secs() < rotation.status().state.drop_after {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rotation.inner.advance().await.unwrap();
    assert_eq!(rotation.status().state.phase, Phase::Idle);
    assert_eq!(ca.roots_pem().unwrap(), offline.roots_pem());
    assert_eq!(roots_in(dir.path()), offline.roots());
}

#[tokio::test]
async fn a_ca_without_a_folder_cannot_rotate() {
    let ca = Arc::new(CertificateAuthority::open(None, "cluster.local").unwrap());
    let identity = controller_identity("cluster.local", "istio-system").unwrap();
    let serving = ServingTls::issue(ca.clone(), identity).unwrap();
    let (_, served) = watch::channel(None);
    let (rotation, _) = RootRotation::new(
        ca,
        None,
        Clients::default(),
        served,
        serving,
        Leadership::always(),
    )
    .await
    .unwrap();
    let err = rotation.start(OPTIONS).await.unwrap_err().to_string();
    assert!(err.contains("kept in memory only"), "{err}");
}

#[tokio::test]
async fn only_the_leader_starts_a_rotation() {
    let dir = TempDir::new("rotation-follower");
    let ca = Arc::new(CertificateAuthority::open(Some(dir.path()), "cluster.local").unwrap());
    let identity = controller_identity("cluster.local", "istio-system").unwrap();
    let serving = ServingTls::issue(ca.clone(), identity).unwrap();
    let (_, served) = watch::channel(None);
    let (leading, elected) = watch::channel(false);
    let leadership = Leadership::from_receiver(elected);
    let store: Arc<dyn RotationStore> = Arc::new(FolderStore::new(dir.path()));
    let (rotation, _) = RootRotation::new(
        ca,
        Some(store),
        Clients::default(),
        served,
        serving,
        leadership,
    )
    .await
    .unwrap();
    let err = rotation.start(OPTIONS).await.unwrap_err();
    assert!(matches!(err, RotationError::NotLeader), "{err}");
    assert_eq!(rotation.status().state.phase, Phase::Idle);
    leading.send_replace(true);
    assert_eq!(
        rotation.start(OPTIONS).await.unwrap().state.phase,
        Phase::Published
    );
}

#[test]
fn an_idle_store_that_tells_its_changes_is_read_rarely_and_a_rotation_every_tick() {
    let watching = Changes {
        watching: true,
        seen: 3,
    };
    let listing = Changes {
        watching: false,
        seen: 1,
    };
    assert_eq!(pause(Phase::Idle, Some(watching)), IDLE_TICK);
    assert_eq!(pause(Phase::Idle, Some(listing)), TICK);
    assert_eq!(pause(Phase::Idle, None), TICK);
    for phase in [Phase::Published, Phase::Reissuing] {
        assert_eq!(pause(phase, Some(watching)), TICK);
    }
}
