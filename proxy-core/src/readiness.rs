//! Readiness: ready once config has arrived and every local pod has its certificate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Tracks named conditions that must clear before the proxy reports ready.
///
/// Clones share the same set of conditions, so one handle can be given to every component.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: AtomicU64,
    // Keyed by a per-guard id so two guards with the same name clear independently; ordered so
    // `pending` lists conditions in the order they were opened.
    open: Mutex<BTreeMap<u64, String>>,
}

impl Inner {
    fn open(&self) -> MutexGuard<'_, BTreeMap<u64, String>> {
        // The map holds plain strings: a panic elsewhere cannot leave it inconsistent.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Holds one condition open until dropped.
#[must_use = "the condition clears as soon as the guard is dropped"]
pub struct BlockReady {
    inner: Arc<Inner>,
    id: u64,
}

impl Readiness {
    /// No conditions yet (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition named `what`; it clears when the guard is dropped.
    pub fn block(&self, what: &str) -> BlockReady {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.open().insert(id, what.to_owned());
        BlockReady {
            inner: self.inner.clone(),
            id,
        }
    }

    /// Names of the conditions still open (empty when ready).
    pub fn pending(&self) -> Vec<String> {
        self.inner.open().values().cloned().collect()
    }
}

impl BlockReady {
    /// The name this guard holds open.
    pub fn name(&self) -> String {
        self.inner.open().get(&self.id).cloned().unwrap_or_default()
    }
}

impl Drop for BlockReady {
    fn drop(&mut self) {
        self.inner.open().remove(&self.id);
    }
}

impl std::fmt::Debug for BlockReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockReady").field("id", &self.id).finish()
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("pending", &self.pending())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_clear_when_guards_drop() {
        let readiness = Readiness::new();
        assert!(readiness.pending().is_empty());
        let config = readiness.block("config");
        let pod_a = readiness.block("pod certificate");
        let pod_b = readiness.block("pod certificate");
        assert_eq!(config.name(), "config");
        assert_eq!(
            readiness.pending(),
            ["config", "pod certificate", "pod certificate"]
        );
        drop(pod_a);
        assert_eq!(readiness.pending(), ["config", "pod certificate"]);
        drop(config);
        assert_eq!(readiness.pending(), ["pod certificate"]);
        drop(pod_b);
        assert!(readiness.pending().is_empty());
    }

    #[test]
    fn clones_share_conditions() {
        let readiness = Readiness::new();
        let clone = readiness.clone();
        let guard = clone.block("xds");
        assert_eq!(readiness.pending(), ["xds"]);
        let moved = std::thread::spawn(move || drop(guard));
        moved.join().unwrap();
        assert!(readiness.pending().is_empty());
        assert!(clone.pending().is_empty());
    }
}
