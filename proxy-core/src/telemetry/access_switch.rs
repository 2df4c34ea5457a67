//! The access log switches the controller serves (`mesh.telemetry.v1.AccessLogging`, from
//! Telemetry `accessLogging[].disabled` mesh-wide, per namespace or per selected workload):
//! whether a connection's line is written, by the workload the reporting proxy serves. Until the
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
    /// Per namespace, per workload name: true = off, false = on.
    workloads: HashMap<String, HashMap<String, bool>>,
}

/// Whether access log lines are written, per namespace.
#[derive(Debug, Default)]
pub struct AccessLogSwitch {
    switches: RwLock<Switches>,
}

impl AccessLogSwitch {
    /// Whether a connection of workload `workload` in `namespace` gets its line: the
    /// workload's switch, else its namespace's, else the mesh's.
    pub fn logs(&self, namespace: &str, workload: &str) -> bool {
        let s = self.switches.read().unwrap_or_else(|e| e.into_inner());
        let off = s
            .workloads
            .get(namespace)
            .and_then(|w| w.get(workload))
            .or_else(|| s.namespaces.get(namespace))
            .copied()
            .unwrap_or(s.disabled);
        !off
    }

    /// Follows `served`, the controller's switches.
    pub fn set(&self, served: AccessLogging) {
        let mut workloads: HashMap<String, HashMap<String, bool>> = HashMap::new();
        for (key, off) in served.workloads {
            // "<namespace>/<workload>"; a key without a namespace names no workload.
            if let Some((namespace, name)) = key.split_once('/') {
                let of_namespace = workloads.entry(namespace.to_owned()).or_default();
                of_namespace.insert(name.to_owned(), off);
            }
        }
        self.replace(Switches {
            disabled: served.disabled,
            namespaces: served.namespaces.into_iter().collect(),
            workloads,
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
        assert!(switch.logs("shop", "web"));
        switch.set(AccessLogging {
            namespaces: [("quiet".to_string(), true)].into(),
            ..AccessLogging::default()
        });
        assert!(!switch.logs("quiet", "web") && switch.logs("shop", "web"));
        switch.set(AccessLogging {
            disabled: true,
            namespaces: [("loud".to_string(), false)].into(),
            ..AccessLogging::default()
        });
        assert!(
            !switch.logs("quiet", "a") && !switch.logs("shop", "a") && switch.logs("loud", "a")
        );
        switch.reset();
        assert!(switch.logs("quiet", "a") && switch.logs("shop", "a"));
    }

    #[test]
    fn a_workload_overrides_its_namespace() {
        let switch = AccessLogSwitch::default();
        switch.set(AccessLogging {
            disabled: false,
            namespaces: [("quiet".to_string(), true)].into(),
            workloads: [
                ("shop/orders".to_string(), true),
                ("quiet/audit".to_string(), false),
                ("no-namespace".to_string(), true),
            ]
            .into(),
        });
        assert!(!switch.logs("shop", "orders"));
        assert!(switch.logs("shop", "payments"));
        assert!(switch.logs("quiet", "audit"));
        assert!(!switch.logs("quiet", "other"));
        // The same name in another namespace is another workload.
        assert!(switch.logs("lab", "orders"));
    }
}
