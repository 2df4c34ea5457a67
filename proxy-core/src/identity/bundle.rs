//! The trust bundle from the controller (`mesh.ca.v1.TrustBundle` over xDS): once one has
//! arrived, every certificate the manager holds trusts exactly its roots, whatever roots came
//! with the certificate, and certificates not issued by its signer (a plugged-in
//! intermediate, or the first root) are renewed ahead of schedule, spread over the window it
//! names.
//!
//! Applying a bundle and publishing a freshly issued certificate both happen under the
//! entries' lock, so neither can overwrite the other with stale roots.

use std::sync::{Arc, Weak};
use std::time::Duration;

use api::trust::TrustBundle;
use hbone::WorkloadCertificate;
use hbone::cert::certificates_from_pem;
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

use super::entries::{Entries, Shared};
use crate::control::LearnedRoots;
use crate::xds::{NamedSubscription, ResourceHandler};

/// Most roots accepted in one bundle (a rotation needs two or three).
const MAX_ROOTS: usize = 16;
/// Longest reissue window honoured: a longer one is cut to it.
const MAX_REISSUE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// `cert` trusting the learned roots, when there are any.
pub(super) fn adopt(cert: WorkloadCertificate, learned: &LearnedRoots) -> WorkloadCertificate {
    match learned.get() {
        Some(roots) if roots.as_slice() != cert.roots() => {
            cert.with_roots(roots.to_vec()).unwrap_or(cert)
        }
        _ => cert,
    }
}

/// Receives the trust bundle for a [`super::CertManager`].
pub(super) struct BundleHandler {
    pub(super) entries: Weak<Entries>,
    pub(super) learned: LearnedRoots,
}

impl BundleHandler {
    /// The named subscription delivering the bundle to this handler.
    pub(super) fn subscription(self) -> NamedSubscription {
        NamedSubscription {
            type_url: api::TRUST_BUNDLE_TYPE_URL.to_owned(),
            names: vec![api::TRUST_BUNDLE_NAME.to_owned()],
            handler: Arc::new(self),
        }
    }
}

impl ResourceHandler for BundleHandler {
    fn apply(&self, _name: &str, resource: &api::prost_types::Any) -> Result<(), String> {
        let bundle: TrustBundle = api::unpack(resource).map_err(|e| format!("decoding: {e}"))?;
        let roots = parse(&bundle)?;
        let within = bundle
            .reissue_within
            .and_then(|d| Duration::try_from(d).ok())
            .map(|d| d.min(MAX_REISSUE_WINDOW));
        let Some(entries) = self.entries.upgrade() else {
            return Ok(());
        };
        let signer = match bundle.signer.is_empty() {
            true => roots[0].to_vec(),
            false => bundle.signer,
        };
        let entries = entries.lock();
        self.learned.set(roots.clone());
        let mut reissued = 0;
        for entry in entries.values() {
            if retrust(&entry.shared, &roots, &signer, within) {
                reissued += 1;
            }
        }
        tracing::info!(
            roots = roots.len(),
            reissued,
            "trust bundle applied to {} identities",
            entries.len()
        );
        Ok(())
    }

    fn remove(&self, _name: &str) {
        // Keep trusting the last bundle: forgetting it would fail connections, not close them.
        tracing::warn!("the controller removed the trust bundle; keeping the last one");
    }
}

/// The bundle's roots, refusing an empty, oversized or unparsable one (NACKed; the last
/// bundle stays).
fn parse(bundle: &TrustBundle) -> Result<Arc<Vec<CertificateDer<'static>>>, String> {
    if bundle.roots.is_empty() {
        return Err("the trust bundle holds no root".into());
    }
    if bundle.roots.len() > MAX_ROOTS {
        return Err(format!(
            "the trust bundle holds {} roots (at most {MAX_ROOTS})",
            bundle.roots.len()
        ));
    }
    let mut roots = Vec::with_capacity(bundle.roots.len());
    for (i, pem) in bundle.roots.iter().enumerate() {
        let parsed = certificates_from_pem(pem, "trust bundle root")
            .map_err(|e| format!("root {i}: {e}"))?;
        roots.extend(parsed);
    }
    Ok(Arc::new(roots))
}

/// Makes `shared`'s current certificate trust `roots` and, when it was not issued by
/// `signer` (DER), schedules its renewal within `within`. Returns whether it was scheduled.
fn retrust(
    shared: &Arc<Shared>,
    roots: &Arc<Vec<CertificateDer<'static>>>,
    signer: &[u8],
    within: Option<Duration>,
) -> bool {
    let Some(current) = shared.status.borrow().cert.clone() else {
        return false;
    };
    let Ok(replaced) = current.with_roots(roots.to_vec()) else {
        return false;
    };
    let stale_signer = replaced.issuer().map(|issuer| issuer.as_ref()) != Some(signer);
    let replaced = Arc::new(replaced);
    shared.certs.send_replace(Some(replaced.clone()));
    shared
        .status
        .send_modify(|status| status.cert = Some(replaced));
    let Some(within) = within.filter(|_| stale_signer) else {
        return false;
    };
    let delay = within.mul_f64(fastrand::f64());
    let wake = shared.wake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        wake.notify_one();
    });
    true
}

/// The `/config_dump` view of the learned bundle: each root's serial number.
pub(super) fn dump(learned: &LearnedRoots) -> Value {
    match learned.get() {
        Some(roots) => json!({
            "roots": roots.iter().map(|r| hbone::cert::serial_hex(r)).collect::<Vec<_>>(),
        }),
        None => Value::Null,
    }
}
