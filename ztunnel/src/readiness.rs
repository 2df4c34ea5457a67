//! Readiness: ready once config has arrived and every local pod has its certificate.

/// Tracks named conditions that must clear before the proxy reports ready.
#[derive(Clone, Default)]
pub struct Readiness {
    _private: (),
}

/// Holds one condition open until dropped.
pub struct BlockReady {
    _private: (),
}

impl Readiness {
    /// No conditions yet (ready).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition named `what`; it clears when the guard is dropped.
    pub fn block(&self, what: &str) -> BlockReady {
        let _ = what;
        todo!()
    }

    /// Names of the conditions still open (empty when ready).
    pub fn pending(&self) -> Vec<String> {
        todo!()
    }
}
