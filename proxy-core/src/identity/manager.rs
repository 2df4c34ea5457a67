//! One current certificate per identity, shared by every connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hbone::{Identity, WorkloadCertificate};
use tokio::sync::{Notify, Semaphore, watch};

use super::bundle::{self, BundleHandler};
use super::client::CaClient;
use super::dump;
use super::entries::{Entries, Entry, Phase, Shared, Status};
use super::error::IdentityError;
use super::metrics::{self, Requests};
use super::signer::CertificateSigner;
use super::worker;
use crate::control::{ControlPlane, LearnedRoots};
use crate::xds::NamedSubscription;

/// Knobs of the certificate manager.
#[derive(Clone, Debug)]
pub struct CertSettings {
    /// Lifetime asked for.
    pub ttl: Duration,
    /// Most CSRs in flight at once.
    pub max_in_flight: usize,
}

impl Default for CertSettings {
    /// Istio's defaults: 24 h certificates, 8 CSRs in flight.
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            max_in_flight: 8,
        }
    }
}

/// Keeps one current certificate per identity.
///
/// An identity is kept while it is prefetched or followed with [`CertManager::watch`]; a
/// background task per identity requests its certificate right away, renews it at half-life
/// (minus jitter) and retries failures with exponential backoff, while the previous
/// certificate stays current until its replacement arrives. An identity only fetched is
/// cached until its refresh time, then forgotten. All methods must be called within a tokio
/// runtime.
pub struct CertManager {
    signer: Arc<dyn CertificateSigner>,
    settings: CertSettings,
    /// Bounds CSRs in flight across all identities.
    permits: Arc<Semaphore>,
    /// Handed weakly to workers, so they can forget unused identities without keeping the
    /// manager alive.
    entries: Arc<Entries>,
    /// Counted by the workers.
    requests: Arc<Requests>,
    /// The trust bundle from the controller, shared with the controller channel.
    learned: LearnedRoots,
}

impl CertManager {
    /// A manager requesting certificates over `control`.
    ///
    /// The trust bundle it learns (see [`CertManager::trust_bundle_subscription`]) is shared
    /// with `control`'s settings, so the controller channel trusts it too.
    pub fn new(control: ControlPlane, settings: CertSettings) -> Arc<Self> {
        let learned = control.learned_roots().clone();
        Self::with_signer_and_roots(Arc::new(CaClient::new(control)), settings, learned)
    }

    /// A manager requesting certificates from `signer`.
    pub fn with_signer(signer: Arc<dyn CertificateSigner>, settings: CertSettings) -> Arc<Self> {
        Self::with_signer_and_roots(signer, settings, LearnedRoots::default())
    }

    /// A manager requesting certificates from `signer`, sharing the trust bundle it learns
    /// with `learned` (the settings of the controller channel).
    pub fn with_signer_and_roots(
        signer: Arc<dyn CertificateSigner>,
        settings: CertSettings,
        learned: LearnedRoots,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        Arc::new(Self {
            signer,
            settings,
            permits,
            entries: Arc::default(),
            requests: Arc::default(),
            learned,
        })
    }

    /// The xDS subscription to the controller's trust bundle: once it arrives, every
    /// certificate trusts its roots, and those not issued by its first root are renewed
    /// ahead of schedule (root rotation).
    pub fn trust_bundle_subscription(&self) -> NamedSubscription {
        BundleHandler {
            entries: Arc::downgrade(&self.entries),
            learned: self.learned.clone(),
        }
        .subscription()
    }

    /// The learned trust bundle's root serial numbers as JSON (null before one arrived).
    pub fn trust_bundle_dump(&self) -> serde_json::Value {
        bundle::dump(&self.learned)
    }

    /// The current certificate for `identity`, requesting it first if needed (callers
    /// arriving together share one request).
    ///
    /// A valid certificate is returned even while its replacement is being requested or has
    /// failed; without one, the error of the last attempt is returned at once rather than
    /// waiting out the retry backoff.
    pub async fn fetch(
        &self,
        identity: &Identity,
    ) -> Result<Arc<WorkloadCertificate>, IdentityError> {
        let (mut status, wake) = {
            let mut entries = self.entries.lock();
            let entry = self.entry(&mut entries, identity);
            (entry.shared.status.subscribe(), entry.shared.wake.clone())
        };
        loop {
            {
                let current = status.borrow_and_update();
                if let Some(cert) = current.valid_cert(SystemTime::now()) {
                    return Ok(cert.clone());
                }
                match &current.phase {
                    Phase::Failed(e) => return Err(e.clone()),
                    // Expired while the worker sleeps towards its refresh time (a suspended
                    // host, a clock step): renew now.
                    Phase::Available => wake.notify_one(),
                    Phase::Pending | Phase::Refreshing => {}
                }
            }
            if status.changed().await.is_err() {
                return Err(IdentityError::Released(identity.to_string()));
            }
        }
    }

    /// Starts keeping a certificate for `identity` (a pod with that service account appeared);
    /// counted, so several pods of one service account share it.
    pub fn prefetch(&self, identity: &Identity) {
        let mut entries = self.entries.lock();
        self.entry(&mut entries, identity).refs += 1;
    }

    /// Drops one reference taken by [`prefetch`](Self::prefetch); the certificate is
    /// forgotten when none remain and nobody follows it with [`watch`](Self::watch).
    pub fn release(&self, identity: &Identity) {
        let mut entries = self.entries.lock();
        let Some(entry) = entries.get_mut(identity) else {
            return;
        };
        if entry.refs == 0 {
            // Unbalanced release: leave a fetch-only entry to its own expiry.
            tracing::debug!(%identity, "release of an identity that is not prefetched");
            return;
        }
        entry.refs -= 1;
        if entry.refs == 0
            && entry.shared.certs.receiver_count() == 0
            && let Some(entry) = entries.remove(identity)
        {
            entry.worker.abort();
            tracing::debug!(%identity, "forgot certificate");
        }
    }

    /// Follows the current certificate of `identity` (None until the first arrives); the
    /// value changes on every rotation.
    ///
    /// Following keeps the identity rotating, as if prefetched, until the receiver (and its
    /// clones) are dropped and no pod keeps it either.
    pub fn watch(&self, identity: &Identity) -> watch::Receiver<Option<Arc<WorkloadCertificate>>> {
        let mut entries = self.entries.lock();
        self.entry(&mut entries, identity).shared.certs.subscribe()
    }

    /// Whether every prefetched identity has a valid certificate (readiness).
    pub fn all_ready(&self) -> bool {
        let now = SystemTime::now();
        self.entries
            .lock()
            .values()
            .filter(|entry| entry.refs > 0)
            .all(|entry| entry.shared.status.borrow().valid_cert(now).is_some())
    }

    /// Identities, serials, validity and state as JSON, never keys.
    pub fn dump(&self) -> serde_json::Value {
        let mut rows: Vec<(Identity, usize, Status)> = self
            .entries
            .lock()
            .values()
            .map(|entry| {
                (
                    entry.shared.identity.clone(),
                    entry.refs,
                    entry.shared.status.borrow().clone(),
                )
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        serde_json::Value::Array(
            rows.iter()
                .map(|(identity, refs, status)| dump::entry(identity, *refs, status))
                .collect(),
        )
    }

    /// Appends the certificate families (see [`metrics`]) named `<component>_...` to `out`.
    pub fn render_metrics(&self, out: &mut String, component: &str) {
        let mut certs: Vec<(String, Option<Arc<WorkloadCertificate>>)> = self
            .entries
            .lock()
            .values()
            .map(|entry| {
                let cert = entry.shared.status.borrow().cert.clone();
                (entry.shared.identity.to_string(), cert)
            })
            .collect();
        certs.sort_by(|a, b| a.0.cmp(&b.0));
        metrics::render(out, component, &certs, &self.requests, SystemTime::now());
    }

    /// The entry of `identity`, created (and its worker started) if new.
    fn entry<'a>(
        &self,
        entries: &'a mut HashMap<Identity, Entry>,
        identity: &Identity,
    ) -> &'a mut Entry {
        entries.entry(identity.clone()).or_insert_with(|| {
            let (certs, _) = watch::channel(None);
            let (status, _) = watch::channel(Status {
                cert: None,
                phase: Phase::Pending,
                next_attempt: None,
            });
            let shared = Arc::new(Shared {
                identity: identity.clone(),
                certs,
                status,
                wake: Arc::new(Notify::new()),
            });
            let worker = tokio::spawn(worker::run(worker::Worker {
                entries: Arc::downgrade(&self.entries),
                shared: shared.clone(),
                signer: self.signer.clone(),
                permits: self.permits.clone(),
                ttl: self.settings.ttl,
                requests: self.requests.clone(),
                learned: self.learned.clone(),
            }))
            .abort_handle();
            tracing::debug!(%identity, "requesting certificate");
            Entry {
                refs: 0,
                shared,
                worker,
            }
        })
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        for entry in self.entries.lock().values() {
            entry.worker.abort();
        }
    }
}
