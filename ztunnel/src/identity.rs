//! Workload certificates for the service accounts of this node's pods, requested from the
//! controller's CA with `ImpersonatedIdentity`, prefetched, rotated at half-life with jitter,
//! retried with backoff, at most 8 requests in flight.

use std::sync::Arc;
use std::time::Duration;

use hbone::{Identity, WorkloadCertificate};
use tokio::sync::watch;

use crate::control::ControlPlane;

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The CA refused or failed.
    #[error("CA: {0}")]
    Ca(String),
    /// The response did not hold a usable certificate.
    #[error("certificate: {0}")]
    Certificate(String),
}

/// Knobs of the certificate manager.
#[derive(Clone, Debug)]
pub struct CertSettings {
    /// Lifetime asked for.
    pub ttl: Duration,
    /// Most CSRs in flight at once.
    pub max_in_flight: usize,
}

/// Keeps one current certificate per identity.
pub struct CertManager {
    _control: ControlPlane,
}

impl CertManager {
    /// A manager requesting certificates over `control`.
    pub fn new(control: ControlPlane, settings: CertSettings) -> Arc<Self> {
        let _ = (control, settings);
        todo!()
    }

    /// The current certificate for `identity`, requesting it first if needed (callers
    /// arriving together share one request).
    pub async fn fetch(&self, identity: &Identity) -> Result<Arc<WorkloadCertificate>, IdentityError> {
        let _ = identity;
        todo!()
    }

    /// Starts keeping a certificate for `identity` (a pod with that service account appeared);
    /// counted, so several pods of one service account share it.
    pub fn prefetch(&self, identity: &Identity) {
        let _ = identity;
        todo!()
    }

    /// Drops one reference taken by [`prefetch`](Self::prefetch); the certificate is
    /// forgotten when none remain.
    pub fn release(&self, identity: &Identity) {
        let _ = identity;
        todo!()
    }

    /// Follows the current certificate of `identity` (None until the first arrives); the
    /// value changes on every rotation.
    pub fn watch(&self, identity: &Identity) -> watch::Receiver<Option<Arc<WorkloadCertificate>>> {
        let _ = identity;
        todo!()
    }

    /// Whether every prefetched identity has a valid certificate (readiness).
    pub fn all_ready(&self) -> bool {
        todo!()
    }

    /// Identities, serials, validity and state as JSON, never keys.
    pub fn dump(&self) -> serde_json::Value {
        todo!()
    }
}
