//! The access log switches the controller serves (`mesh.telemetry.v1.AccessLogging`, from
//! Telemetry `accessLogging[].disabled` mesh-wide or per namespace): whether a connection's
//! line is written, by the namespace of the workload the reporting proxy serves. Until the
//! resource arrives, and after it is removed, every line is written.

use std::collections::HashMap;
use std::sync::RwLock;

use api::telemetry::AccessLogging;

/// What the controller said.
#[derive(Debug, Default, PartialEq, Eq)]
struct Switches {
    /// Mesh-wide off.
    disabled: bool,
    /// Per namespace: true = off, false = on.
    namespaces: HashMap<String, bool>,
}

/// Whether access log lines are written, per namespace.
#[derive(Debug, Default)]
pub struct AccessLogSwitch {
    switches: RwLock<Switches>,
}

impl AccessLogSwitch {
    /// Whether a connection of a workload in `namespace` gets its line.
    pub fn logs(&self, namespace: &str) -> bool {
        let s = self.switches.read().unwrap_or_else(|e| e.into_inner());
        !s.namespaces.get(namespace).copied().unwrap_or(s.disabled)
    }

    /// Follows `served`, the controller's switches.
    pub fn set(&self, served: AccessLogging) {
        self.replace(Switches {
            disabled: served.disabled,
            namespaces: served.namespaces.into_iter().collect(),
        });
    }

    /// Back to writing every line, Istio's default (the controller removed the switches).
    pub fn reset(&self) {
        self.replace(Switches::default());
    }

    fn replace(&self, switches: Switches) {
        *self.switches.write().unwrap_or_else(|e| e.into_inner()) = switches;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_override_the_mesh_and_a_reset_restores_lines() {
        let switch = AccessLogSwitch::default();
        assert!(switch.logs("shop"));
        switch.set(AccessLogging {
            disabled: false,
            namespaces: [("quiet".to_string(), true)].into(),
        });
        assert!(!switch.logs("quiet") && switch.logs("shop"));
        switch.set(AccessLogging {
            disabled: true,
            namespaces: [("loud".to_string(), false)].into(),
        });
        assert!(!switch.logs("quiet") && !switch.logs("shop") && switch.logs("loud"));
        switch.reset();
        assert!(switch.logs("quiet") && switch.logs("shop"));
    }
}
