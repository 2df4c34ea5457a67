//! A sandbox held under its lock: opening and creating it, building its
//! nodes, storing objects (uid, creationTimestamp, ClusterIPs), refreshing
//! pod status from the processes, and keeping Services (DNAT, hosts files)
//! and the state folder in step.

use serde_json::json;

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::netns::{self, Tools};
use crate::sandbox::host::state::{self, StateLock};
use crate::sandbox::host::{dns, kubeproxy, prober, procfs};
use crate::sandbox::model::addresses::allocate_cluster_ip;
use crate::sandbox::model::cluster::{Applied, Cluster, Phase};
use crate::sandbox::model::control::{ControlPlane, Layout};
use crate::sandbox::model::ids::{OsEntropy, ProcId, uid};
use crate::sandbox::model::objects::Object;
use crate::sandbox::model::probes::runs_readiness_probe;
use crate::sandbox::model::services::services;
use crate::sandbox::settings::SandboxSettings;

/// What applying one object did, as kubectl words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed unchanged.
    Unchanged,
}

impl Change {
    /// kubectl's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

/// A sandbox held under its lock.
pub struct Sandbox {
    /// Where things are.
    pub cfg: SandboxSettings,
    /// Resolved tools.
    pub tools: Tools,
    /// The model.
    pub cluster: Cluster,
    /// Print progress lines.
    pub verbose: bool,
    _lock: StateLock,
}

impl Sandbox {
    /// Locks and loads an existing sandbox, refreshing pod status.
    pub fn open(cfg: &SandboxSettings) -> Result<Sandbox> {
        netns::require_root()?;
        let tools = Tools::find()?;
        let lock = state::lock(&cfg.state_dir, &cfg.name, false)?;
        let cluster = state::load(&cfg.state_dir, &cfg.name)?;
        let mut sb = Sandbox {
            cfg: cfg.clone(),
            tools,
            cluster,
            verbose: true,
            _lock: lock,
        };
        if sb.refresh() {
            sb.sync()?;
        }
        Ok(sb)
    }

    /// Starts a new sandbox record (no namespaces yet) under `lock`.
    pub fn create(
        cfg: &SandboxSettings,
        tools: Tools,
        lock: StateLock,
        cluster: Cluster,
    ) -> Result<Sandbox> {
        let sb = Sandbox {
            cfg: cfg.clone(),
            tools,
            cluster,
            verbose: true,
            _lock: lock,
        };
        sb.save()?;
        Ok(sb)
    }

    /// Where the system components' files are.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.cfg.state_dir, &self.cfg.bin_dir)
    }

    /// The control plane record, or an error when this sandbox has none.
    pub fn control(&self) -> Result<&ControlPlane> {
        self.cluster.control.as_ref().ok_or_else(|| {
            SandboxError::Invalid(format!(
                "sandbox {} runs no controller (it was started by an older meshctl)",
                self.cfg.name
            ))
        })
    }

    /// Prints a progress line unless quiet.
    pub(crate) fn say(&self, line: impl AsRef<str>) {
        if self.verbose {
            say!("{}", line.as_ref());
        }
    }

    /// Saves state.json, pods/ and manifests/.
    pub fn save(&self) -> Result<()> {
        state::save(&self.cfg.state_dir, &self.cluster)
    }

    /// Creates the fabric and the nodes.
    pub fn build_nodes(&mut self) -> Result<()> {
        for n in &self.cluster.nodes {
            self.say(format!(
                "creating node {} ({}, pods {})",
                n.name,
                n.ip,
                n.pod_cidr()
            ));
        }
        let nodes = self.cluster.nodes.clone();
        netns::create_nodes(&self.tools, &self.cluster, &nodes)?;
        for n in &nodes {
            kubeproxy::install(&self.tools, n)?;
        }
        self.ensure_namespace("default");
        // The mesh's root namespace: policies there apply mesh-wide.
        self.ensure_namespace(crate::sandbox::model::control::ROOT_NAMESPACE);
        self.sync()
    }

    /// Records an implicit namespace (as Kubernetes' `default`, or one an
    /// object refers to) so `get ns`, labels and the controller see it.
    pub(super) fn ensure_namespace(&mut self, name: &str) {
        if self.cluster.find("Namespace", None, name).is_some() {
            return;
        }
        let value = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let object = Object {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: name.into(),
            source: "(implicit)".into(),
            value,
        };
        self.store(object, state::now());
    }

    /// Adds or replaces an object, filling uid and creationTimestamp (kept
    /// from an earlier version of the same object).
    pub(super) fn store(&mut self, mut object: Object, now: u64) -> Change {
        let existing = self
            .cluster
            .objects
            .iter()
            .position(|a| a.object.same_identity(&object));
        let (uid_value, created) = match existing.map(|i| &self.cluster.objects[i]) {
            Some(old) => (
                old.object.value.pointer("/metadata/uid").cloned(),
                old.created,
            ),
            None => (None, now),
        };
        if let Some(meta) = object
            .value
            .get_mut("metadata")
            .and_then(|m| m.as_object_mut())
        {
            let uid_value = uid_value.unwrap_or_else(|| json!(uid(&mut OsEntropy)));
            meta.insert("uid".into(), uid_value);
            meta.insert("creationTimestamp".into(), json!(state::rfc3339(created)));
        }
        let applied = Applied { object, created };
        match existing {
            Some(i) if self.cluster.objects[i].object.value == applied.object.value => {
                Change::Unchanged
            }
            Some(i) => {
                self.cluster.objects[i] = applied;
                Change::Configured
            }
            None => {
                self.cluster.objects.push(applied);
                Change::Created
            }
        }
    }

    /// Gives a Service its ClusterIP: the one it asks for, the one it had,
    /// or the next free one.
    pub(super) fn assign_cluster_ip(&self, object: &mut Object) -> Result<()> {
        let spec = object.value.get("spec").cloned().unwrap_or_default();
        let requested = spec.get("clusterIP").and_then(|v| v.as_str()).unwrap_or("");
        if requested == "None" {
            return Ok(());
        }
        let previous = self
            .cluster
            .find("Service", object.namespace.as_deref(), &object.name)
            .and_then(|a| {
                a.object
                    .value
                    .pointer("/spec/clusterIP")?
                    .as_str()
                    .map(String::from)
            });
        let mut used = self.cluster.used_cluster_ips();
        if let Some(p) = previous.as_deref().and_then(|p| p.parse().ok()) {
            used.remove(&p);
        }
        let ip = if !requested.is_empty() {
            let ip = requested.parse().map_err(|_| {
                SandboxError::Invalid(format!("{}: bad clusterIP", object.display()))
            })?;
            if used.contains(&ip) {
                return Err(SandboxError::Invalid(format!(
                    "{} from {}: spec.clusterIP {ip} is already allocated",
                    object.display(),
                    object.source
                )));
            }
            ip
        } else if let Some(p) = previous.and_then(|p| p.parse().ok()) {
            p
        } else {
            allocate_cluster_ip(&used)
                .ok_or_else(|| SandboxError::Invalid("no free ClusterIP left".into()))?
        };
        if let Some(s) = object.value.get_mut("spec").and_then(|s| s.as_object_mut()) {
            s.insert("clusterIP".into(), json!(ip.to_string()));
            s.insert("clusterIPs".into(), json!([ip.to_string()]));
        }
        Ok(())
    }

    /// Updates phases and readiness from the processes and the nodes' probe reports
    /// (readiness probes decide readiness where the sandbox runs them, declared ports
    /// elsewhere); true if any changed.
    pub fn refresh(&mut self) -> bool {
        let nodes: Vec<String> = self.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        let reports = prober::read_reports(&self.cfg.state_dir, &nodes);
        let mut changed = false;
        for (key, pod) in self.cluster.pods.iter_mut() {
            if pod.phase != Phase::Running {
                continue;
            }
            let probes = reports.get(key).filter(|r| r.uid == pod.uid);
            let procs: Vec<ProcId> = pod.containers.iter().filter_map(|c| c.process).collect();
            let alive = procs.iter().all(|p| procfs::alive(*p));
            let (phase, ready) = if !alive {
                (Phase::Failed, false)
            } else if runs_readiness_probe(&pod.spec, pod.ip) {
                // Not ready until the first pass is reported, as in Kubernetes.
                (Phase::Running, probes.and_then(|r| r.ready) == Some(true))
            } else {
                (
                    Phase::Running,
                    procfs::ready(pod, &pod.typed_spec().containers),
                )
            };
            let unhealthy = alive && probes.is_some_and(|r| !r.live);
            let failures = probes.map_or(pod.liveness_failures, |r| r.liveness_failures);
            if (phase, ready, unhealthy, failures)
                != (pod.phase, pod.ready, pod.unhealthy, pod.liveness_failures)
            {
                pod.phase = phase;
                pod.ready = ready;
                pod.unhealthy = unhealthy;
                pod.liveness_failures = failures;
                changed = true;
            }
        }
        changed
    }

    /// Rewrites Service rules, hosts files and the state folder.
    pub fn sync(&mut self) -> Result<()> {
        kubeproxy::sync(&self.tools, &self.cluster)?;
        dns::sync(&self.cluster, &services(&self.cluster))?;
        self.save()
    }
}

/// "<kind> \"<name>\" not found", as verbs report a missing object.
pub(super) fn not_found(kind: &str, name: &str) -> SandboxError {
    SandboxError::Invalid(format!("{kind} {name:?} not found"))
}
