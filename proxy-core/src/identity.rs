//! Workload certificates for the service accounts of this node's pods, requested from the
//! controller's CA with `ImpersonatedIdentity`, prefetched, rotated at half-life with jitter,
//! retried with backoff, at most 8 requests in flight.
//!
//! - [`CertManager`]: one current certificate per identity, shared by every connection;
//! - [`CaClient`]: Istio's `IstioCertificateService/CreateCertificate` over the controller
//!   channel, behind the [`CertificateSigner`] seam.

mod client;
mod dump;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use hbone::{Identity, WorkloadCertificate};
use tokio::sync::{Notify, Semaphore, watch};

use crate::control::ControlPlane;

pub use client::CaClient;

/// Why a certificate could not be obtained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The CA refused or failed.
    #[error("CA: {0}")]
    Ca(String),
    /// The response did not hold a usable certificate.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The identity was released (its last pod left) while the request was waiting.
    #[error("identity {0} is no longer kept")]
    Released(String),
}

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

/// Signs certificate requests: the controller's CA in production ([`CaClient`]).
#[tonic::async_trait]
pub trait CertificateSigner: Send + Sync + 'static {
    /// Asks for `csr_pem` to be signed as `identity` for `ttl`; returns the PEM chain leaf
    /// first, roots last.
    async fn sign(
        &self,
        identity: &Identity,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError>;
}

/// Where an identity's certificate stands.
#[derive(Clone, Debug)]
enum Phase {
    /// No usable certificate yet; a request is queued or in flight.
    Pending,
    /// A valid certificate is current; the next refresh is scheduled.
    Available,
    /// A valid certificate is current and its replacement is being requested.
    Refreshing,
    /// The last request failed; retried after a backoff.
    Failed(IdentityError),
}

/// What waiters and the dump read about one identity.
#[derive(Clone, Debug)]
struct Status {
    cert: Option<Arc<WorkloadCertificate>>,
    phase: Phase,
    /// When the worker wakes next (refresh or retry).
    next_attempt: Option<SystemTime>,
}

impl Status {
    /// The current certificate if it is valid now.
    fn valid_cert(&self, now: SystemTime) -> Option<&Arc<WorkloadCertificate>> {
        self.cert.as_ref().filter(|c| !c.is_expired_at(now))
    }
}

/// The state of one identity, shared by its worker and the manager.
///
/// Waiters hold only receivers, never this, so that dropping the entry (and aborting its
/// worker) closes the channels and wakes them.
struct Shared {
    identity: Identity,
    /// Changes only when a new certificate arrives (followers swap TLS configs on it).
    certs: watch::Sender<Option<Arc<WorkloadCertificate>>>,
    /// Changes on every phase change.
    status: watch::Sender<Status>,
    /// Wakes the worker early when a caller finds the current certificate expired.
    wake: Arc<Notify>,
}

/// One identity the manager knows about.
struct Entry {
    /// Pods keeping it ([`CertManager::prefetch`] minus [`CertManager::release`]).
    refs: usize,
    shared: Arc<Shared>,
    worker: tokio::task::AbortHandle,
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
    entries: Mutex<HashMap<Identity, Entry>>,
    /// Handed to workers so they can forget unused identities without keeping the manager
    /// alive.
    this: Weak<CertManager>,
}

impl CertManager {
    /// A manager requesting certificates over `control`.
    pub fn new(control: ControlPlane, settings: CertSettings) -> Arc<Self> {
        Self::with_signer(Arc::new(CaClient::new(control)), settings)
    }

    /// A manager requesting certificates from `signer`.
    pub fn with_signer(signer: Arc<dyn CertificateSigner>, settings: CertSettings) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
        Arc::new_cyclic(|this| Self {
            signer,
            settings,
            permits,
            entries: Mutex::new(HashMap::new()),
            this: this.clone(),
        })
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
            let mut entries = self.lock();
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
        let mut entries = self.lock();
        self.entry(&mut entries, identity).refs += 1;
    }

    /// Drops one reference taken by [`prefetch`](Self::prefetch); the certificate is
    /// forgotten when none remain and nobody follows it with [`watch`](Self::watch).
    pub fn release(&self, identity: &Identity) {
        let mut entries = self.lock();
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
        let mut entries = self.lock();
        self.entry(&mut entries, identity).shared.certs.subscribe()
    }

    /// Whether every prefetched identity has a valid certificate (readiness).
    pub fn all_ready(&self) -> bool {
        let now = SystemTime::now();
        self.lock()
            .values()
            .filter(|entry| entry.refs > 0)
            .all(|entry| entry.shared.status.borrow().valid_cert(now).is_some())
    }

    /// Identities, serials, validity and state as JSON, never keys.
    pub fn dump(&self) -> serde_json::Value {
        let mut rows: Vec<(Identity, usize, Status)> = self
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
                manager: self.this.clone(),
                shared: shared.clone(),
                signer: self.signer.clone(),
                permits: self.permits.clone(),
                ttl: self.settings.ttl,
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

    /// Removes `shared`'s entry if no pod keeps it and nobody follows it. Returns whether the
    /// worker should stop (its entry is gone or was replaced).
    fn forget_if_unused(&self, shared: &Arc<Shared>) -> bool {
        let mut entries = self.lock();
        match entries.get(&shared.identity) {
            Some(entry) if Arc::ptr_eq(&entry.shared, shared) => {
                if entry.refs == 0 && shared.certs.receiver_count() == 0 {
                    entries.remove(&shared.identity);
                    tracing::debug!(identity = %shared.identity, "forgot unused certificate");
                    true
                } else {
                    false
                }
            }
            _ => true,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        // Entries are replaced whole under the lock: a panic elsewhere cannot leave one
        // half-updated.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        for entry in self.lock().values() {
            entry.worker.abort();
        }
    }
}

#[cfg(test)]
mod tests;
