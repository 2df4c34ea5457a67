//! The background task of one identity: request, publish, sleep until the refresh time (or the
//! retry backoff), repeat while the identity is kept.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use hbone::{CertificateRequest, Identity, WorkloadCertificate};
use tokio::sync::Semaphore;

use super::bundle;
use super::entries::{Entries, Phase, Shared, Status};
use super::error::IdentityError;
use super::metrics::Requests;
use super::signer::CertificateSigner;
use crate::control::LearnedRoots;

/// First retry delay after a failed request.
pub(super) const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A request that takes longer is abandoned (and retried), so a hung CA cannot hold one of
/// the few in-flight permits forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Never refresh sooner than this after a certificate arrives, whatever its validity says:
/// a CA handing out nearly expired certificates must not make the worker spin.
const MIN_REFRESH: Duration = Duration::from_millis(500);

/// Everything one identity's task needs; it holds the manager only weakly.
pub(super) struct Worker {
    pub(super) entries: Weak<Entries>,
    pub(super) shared: Arc<Shared>,
    pub(super) signer: Arc<dyn CertificateSigner>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) ttl: Duration,
    pub(super) requests: Arc<Requests>,
    pub(super) learned: LearnedRoots,
}

/// Runs until the identity is forgotten (or the task is aborted by the manager).
pub(super) async fn run(worker: Worker) {
    let shared = &worker.shared;
    let identity = &shared.identity;
    let mut backoff = INITIAL_BACKOFF;
    loop {
        shared.status.send_modify(|status| {
            status.phase = if status.valid_cert(SystemTime::now()).is_some() {
                Phase::Refreshing
            } else {
                Phase::Pending
            };
            status.next_attempt = None;
        });
        let result = {
            // Closed never happens (the manager owns the semaphore and never closes it).
            let Ok(_permit) = worker.permits.acquire().await else {
                return;
            };
            match tokio::time::timeout(
                REQUEST_TIMEOUT,
                request(&*worker.signer, identity, worker.ttl),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(IdentityError::Ca(format!(
                    "no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))),
            }
        };
        worker.requests.count(result.is_ok());
        let wait = match result {
            Ok(cert) => {
                backoff = INITIAL_BACKOFF;
                let now = SystemTime::now();
                let wait = refresh_delay(&cert, now, fastrand::f64());
                let expires_in = cert.expires_at().duration_since(now).unwrap_or_default();
                tracing::info!(
                    %identity,
                    expires_in_s = expires_in.as_secs(),
                    refresh_in_s = wait.as_secs(),
                    "certificate issued"
                );
                let Some(entries) = worker.entries.upgrade() else {
                    return;
                };
                // Under the entries' lock, so that a trust bundle arriving now is applied
                // either here or by its handler to what is published here.
                let _locked = entries.lock();
                let cert = Arc::new(bundle::adopt(cert, &worker.learned));
                // Followers first: by the time a fetch sees the new status, TLS servers
                // following the identity have been told too.
                shared.certs.send_replace(Some(cert.clone()));
                shared.status.send_replace(Status {
                    cert: Some(cert),
                    phase: Phase::Available,
                    next_attempt: Some(now + wait),
                });
                wait
            }
            Err(error) => {
                let wait = backoff;
                backoff = next_backoff(backoff);
                let still_valid = shared
                    .status
                    .borrow()
                    .valid_cert(SystemTime::now())
                    .is_some();
                tracing::warn!(
                    %identity,
                    %error,
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    still_valid,
                    "certificate request failed"
                );
                shared.status.send_modify(|status| {
                    status.phase = Phase::Failed(error);
                    status.next_attempt = Some(SystemTime::now() + wait);
                });
                wait
            }
        };
        let nudged = tokio::select! {
            () = tokio::time::sleep(wait) => false,
            () = shared.wake.notified() => true,
        };
        let Some(entries) = worker.entries.upgrade() else {
            return;
        };
        // A nudge means a caller is waiting for a certificate right now: renew even if
        // nobody keeps the identity.
        if !nudged && entries.forget_if_unused(shared) {
            return;
        }
    }
}

/// The retry delay after one that failed: doubled, capped at [`MAX_BACKOFF`].
pub(super) fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

/// One CSR round trip: key and CSR, the CA's answer, the assembled certificate.
async fn request(
    signer: &dyn CertificateSigner,
    identity: &Identity,
    ttl: Duration,
) -> Result<WorkloadCertificate, IdentityError> {
    let csr = CertificateRequest::generate(identity)
        .map_err(|e| IdentityError::Certificate(format!("generating the CSR: {e}")))?;
    let chain = signer.sign(identity, csr.csr_pem(), ttl).await?;
    csr.into_certificate(&chain)
        .map_err(|e| IdentityError::Certificate(e.to_string()))
}

/// How long after `now` (the arrival of `cert`) to request its replacement: at half-life,
/// minus a jitter of up to a tenth of the remaining lifetime (`jitter` in `0.0..=1.0` picks
/// where) so identities issued together do not renew together.
///
/// CAs backdate `not_before` to tolerate clock skew, so for short lifetimes the half-life of
/// the full validity window may already be past on arrival; the half of what remains is used
/// then, which keeps rotation from looping.
pub(super) fn refresh_delay(cert: &WorkloadCertificate, now: SystemTime, jitter: f64) -> Duration {
    let remaining = cert
        .expires_at()
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    let to_half_life = cert
        .refresh_at()
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    let base = to_half_life.max(remaining / 2);
    let jitter = (remaining / 10).mul_f64(jitter.clamp(0.0, 1.0));
    base.saturating_sub(jitter).max(MIN_REFRESH)
}
