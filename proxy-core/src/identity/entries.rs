//! What the manager and each identity's worker share: the identities kept, their status and
//! certificates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use hbone::{Identity, WorkloadCertificate};
use tokio::sync::{Notify, watch};

use super::error::IdentityError;

/// Where an identity's certificate stands.
#[derive(Clone, Debug)]
pub(super) enum Phase {
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
pub(super) struct Status {
    pub(super) cert: Option<Arc<WorkloadCertificate>>,
    pub(super) phase: Phase,
    /// When the worker wakes next (refresh or retry).
    pub(super) next_attempt: Option<SystemTime>,
}

impl Status {
    /// The current certificate if it is valid now.
    pub(super) fn valid_cert(&self, now: SystemTime) -> Option<&Arc<WorkloadCertificate>> {
        self.cert.as_ref().filter(|c| !c.is_expired_at(now))
    }
}

/// The state of one identity, shared by its worker and the manager.
///
/// Waiters hold only receivers, never this, so that dropping the entry (and aborting its
/// worker) closes the channels and wakes them.
pub(super) struct Shared {
    pub(super) identity: Identity,
    /// Changes only when a new certificate arrives (followers swap TLS configs on it).
    pub(super) certs: watch::Sender<Option<Arc<WorkloadCertificate>>>,
    /// Changes on every phase change.
    pub(super) status: watch::Sender<Status>,
    /// Wakes the worker early when a caller finds the current certificate expired.
    pub(super) wake: Arc<Notify>,
}

/// One identity the manager knows about.
pub(super) struct Entry {
    /// Pods keeping it (`CertManager::prefetch` minus `CertManager::release`).
    pub(super) refs: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) worker: tokio::task::AbortHandle,
}

/// Every identity kept, by identity; the manager owns it, workers hold it weakly.
#[derive(Default)]
pub(super) struct Entries(Mutex<HashMap<Identity, Entry>>);

impl Entries {
    /// The entries, locked.
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        // Entries are replaced whole under the lock: a panic elsewhere cannot leave one
        // half-updated.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `shared`'s entry if no pod keeps it and nobody follows it. Returns whether the
    /// worker should stop (its entry is gone or was replaced).
    pub(super) fn forget_if_unused(&self, shared: &Arc<Shared>) -> bool {
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
}
