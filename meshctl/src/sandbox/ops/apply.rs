//! What kubectl's `apply`, `delete` and `label` do to a sandbox: change the
//! stored objects, then reconcile pods with them.

use std::collections::BTreeMap;

use serde_json::json;

use super::sandbox::{Sandbox, not_found};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::state;
use crate::sandbox::model::objects::Object;

impl Sandbox {
    /// Applies objects (Namespaces first, so everything else finds its
    /// namespace), then reconciles. Returns kubectl-style result lines.
    pub fn apply(&mut self, mut objects: Vec<Object>) -> Result<Vec<String>> {
        objects.sort_by_key(|o| o.kind != "Namespace");
        let now = state::now();
        let mut lines = Vec::new();
        for mut object in objects {
            if let Some(ns) = object.namespace.clone() {
                self.ensure_namespace(&ns);
            }
            if object.kind == "Service" {
                self.assign_cluster_ip(&mut object)?;
            }
            let name = object.resource_name();
            let change = self.store(object, now);
            lines.push(format!("{name} {}", change.as_str()));
        }
        for l in &lines {
            self.say(l);
        }
        self.reconcile()?;
        Ok(lines)
    }

    /// Deletes objects (a Namespace takes everything in it), then
    /// reconciles. Returns kubectl-style result lines.
    pub fn delete(&mut self, objects: &[Object]) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        for object in objects {
            let before = self.cluster.objects.len();
            self.cluster
                .objects
                .retain(|a| !a.object.same_identity(object));
            if self.cluster.objects.len() == before {
                lines.push(format!("{} not found", object.resource_name()));
                continue;
            }
            if object.kind == "Namespace" {
                self.cluster
                    .objects
                    .retain(|a| a.object.namespace.as_deref() != Some(&object.name));
            }
            lines.push(format!("{} deleted", object.resource_name()));
        }
        for l in &lines {
            self.say(l);
        }
        self.reconcile()?;
        Ok(lines)
    }

    /// Sets (`k=v`) and removes (`k-`) labels on a Namespace or a Pod.
    pub fn label(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        changes: &[String],
    ) -> Result<String> {
        let mut edits = Vec::new();
        for c in changes {
            if let Some(key) = c.strip_suffix('-').filter(|k| !k.is_empty()) {
                edits.push((key.to_string(), None));
            } else if let Some((k, v)) = c.split_once('=').filter(|(k, _)| !k.is_empty()) {
                edits.push((k.to_string(), Some(v.to_string())));
            } else {
                return Err(SandboxError::Invalid(format!(
                    "label {c:?}: expected key=value or key-"
                )));
            }
        }
        let apply_edits = |labels: &mut BTreeMap<String, String>| {
            for (k, v) in &edits {
                match v {
                    Some(v) => labels.insert(k.clone(), v.clone()),
                    None => labels.remove(k),
                };
            }
        };
        let object = self.cluster.objects.iter_mut().find(|a| {
            a.object.kind == kind
                && a.object.namespace.as_deref() == namespace
                && a.object.name == name
        });
        match (kind, object) {
            (_, Some(applied)) => {
                let mut labels = applied.object.labels();
                apply_edits(&mut labels);
                if let Some(meta) = applied
                    .object
                    .value
                    .get_mut("metadata")
                    .and_then(|m| m.as_object_mut())
                {
                    meta.insert("labels".into(), json!(labels));
                }
                if kind == "Pod" {
                    let key = format!("{}/{name}", namespace.unwrap_or_default());
                    if let Some(p) = self.cluster.pods.get_mut(&key) {
                        p.labels = labels;
                    }
                }
            }
            // Deployment pods have no object of their own: label the pod.
            ("Pod", None) => {
                let key = format!("{}/{name}", namespace.unwrap_or_default());
                let pod = self
                    .cluster
                    .pods
                    .get_mut(&key)
                    .ok_or_else(|| not_found("pod", &key))?;
                apply_edits(&mut pod.labels);
            }
            (_, None) => return Err(not_found(&kind.to_lowercase(), name)),
        }
        self.sync()?;
        Ok(format!("{}/{name} labeled", kind.to_lowercase()))
    }
}
