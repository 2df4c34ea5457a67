//! The roots a proxy learns from the controller at run time (the trust bundle over xDS),
//! shared by the certificate manager (mesh mTLS) and the controller channel, which trusts
//! them beside its root file: a root rotation reaches a proxy whose root file is an old copy.

use std::sync::{Arc, RwLock};

use rustls_pki_types::CertificateDer;

/// The latest trust bundle learned over xDS; empty until one arrives. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct LearnedRoots(Arc<RwLock<Option<Arc<Vec<CertificateDer<'static>>>>>>);

impl LearnedRoots {
    /// The latest bundle, if one arrived.
    pub fn get(&self) -> Option<Arc<Vec<CertificateDer<'static>>>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the bundle.
    pub fn set(&self, roots: Arc<Vec<CertificateDer<'static>>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(roots);
    }

    /// `from_file` followed by the learned roots it lacks.
    pub fn union(&self, from_file: Vec<CertificateDer<'static>>) -> Vec<CertificateDer<'static>> {
        let mut roots = from_file;
        for root in self.get().iter().flat_map(|learned| learned.iter()) {
            if !roots.contains(root) {
                roots.push(root.clone());
            }
        }
        roots
    }
}
