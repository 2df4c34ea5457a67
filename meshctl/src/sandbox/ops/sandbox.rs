//! A locked, loaded sandbox and the operations that change it: applying and
//! deleting objects, reconciling pods with them (namespaces, links,
//! processes), and keeping Services (DNAT, hosts files) and the state folder
//! in step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::sandbox::config::Config;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::container::Launch;
use crate::sandbox::host::netns::{self, Tools};
use crate::sandbox::host::state::{self, StateLock};
use crate::sandbox::host::{dns, kubeproxy, process, procfs};
use crate::sandbox::model::addresses::allocate_cluster_ip;
use crate::sandbox::model::cluster::{Applied, Cluster, Phase, Pod};
use crate::sandbox::model::ids::{OsEntropy, ProcId, uid};
use crate::sandbox::model::objects::Object;
use crate::sandbox::model::services::services;

/// Longest `up`/`apply` wait for new pods to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub cfg: Config,
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
    pub fn open(cfg: &Config) -> Result<Sandbox> {
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
        cfg: &Config,
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
    fn ensure_namespace(&mut self, name: &str) {
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

    /// Makes pods match the objects: deploys waypoints for waypoint Gateways,
    /// stops removed pods, creates and starts new ones, waits (bounded) for
    /// them to be ready, then syncs.
    pub fn reconcile(&mut self) -> Result<()> {
        // Waypoint Gateways first: their Deployments are planned like any other.
        self.sync_waypoints()?;
        let plan = self.cluster.plan_pods();
        for r in plan.relabel {
            if let Some(p) = self.cluster.pods.get_mut(&r.key) {
                p.labels = r.labels;
                p.annotations = r.annotations;
            }
        }
        let doomed: Vec<Pod> = plan
            .delete
            .iter()
            .filter_map(|k| self.cluster.pods.remove(k))
            .collect();
        // Place every new pod in the model first: an impossible placement
        // fails the verb before anything is stopped or started.
        let now = state::now();
        let mut created = Vec::new();
        for new in plan.create {
            let what = match (&new.name, &new.owner) {
                (Some(n), _) => format!("pod {}/{n}", new.namespace),
                (None, Some(o)) => format!("deployment {}/{}", new.namespace, o.deployment),
                (None, None) => format!("pod in namespace {}", new.namespace),
            };
            let pod = self
                .cluster
                .place(new, now, &mut OsEntropy)
                .map_err(|m| SandboxError::Invalid(format!("{what}: {m}")))?;
            created.push(pod.key());
        }
        self.stop_pods(&doomed);
        // Recorded before anything exists, so a crash from here on leaves
        // nothing `down` does not know about.
        self.save()?;
        if !created.is_empty() {
            let pods: Vec<&Pod> = created
                .iter()
                .filter_map(|k| self.cluster.pods.get(k))
                .collect();
            netns::create_pods(&self.tools, &self.cluster, &pods)?;
            let views = services(&self.cluster);
            for p in &pods {
                dns::write_pod(&self.cluster, p, &views)?;
            }
            for key in &created {
                self.start_pod(key)?;
            }
            self.save()?;
            self.wait_ready(&created);
        }
        self.refresh();
        self.sync()
    }

    fn start_pod(&mut self, key: &str) -> Result<()> {
        let Some(pod) = self.cluster.pods.get(key).cloned() else {
            return Ok(());
        };
        let node = self
            .cluster
            .node(&pod.node)
            .cloned()
            .ok_or_else(|| not_found("node", &pod.node))?;
        self.say(format!(
            "starting pod {} on {} ({})",
            pod.key(),
            pod.node,
            pod.ip
        ));
        let spec = pod.typed_spec();
        let grant = self.granted_files(&pod);
        let mut states = pod.containers.clone();
        for (i, st) in states.iter_mut().enumerate().take(spec.containers.len()) {
            let launch = Launch::for_container(&self.cfg, &pod, &node, i, grant.clone())?;
            if launch.argv.is_empty() {
                self.say(format!(
                    "  warning: container {} of {} has no command; the sandbox runs commands, not images",
                    st.name,
                    pod.key()
                ));
                continue;
            }
            let log = self.log_path(&pod, &st.name);
            st.process = Some(process::spawn(&launch, &log)?);
        }
        if let Some(p) = self.cluster.pods.get_mut(key) {
            p.containers = states;
            p.phase = Phase::Running;
        }
        Ok(())
    }

    /// A container's log file.
    pub fn log_path(&self, pod: &Pod, container: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("logs")
            .join(&pod.namespace)
            .join(&pod.name)
            .join(format!("{container}.log"))
    }

    fn wait_ready(&mut self, keys: &[String]) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.refresh();
            let pending: Vec<&Pod> = keys
                .iter()
                .filter_map(|k| self.cluster.pods.get(k))
                .filter(|p| p.phase == Phase::Running && !p.ready)
                .collect();
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let names: Vec<String> = pending.iter().map(|p| p.key()).collect();
                self.say(format!(
                    "warning: not ready after {}s (ports not listening): {}",
                    READY_TIMEOUT.as_secs(),
                    names.join(", ")
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for key in keys {
            let Some(p) = self.cluster.pods.get(key) else {
                continue;
            };
            if p.phase == Phase::Failed {
                let name = p
                    .containers
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default();
                let tail = quoted_tail(&self.log_path(p, &name), 5);
                self.say(format!(
                    "warning: pod {key} failed; last log lines:\n{tail}"
                ));
            }
        }
    }

    /// Updates phases and readiness from the processes; true if any changed.
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        for pod in self.cluster.pods.values_mut() {
            if pod.phase != Phase::Running {
                continue;
            }
            let procs: Vec<ProcId> = pod.containers.iter().filter_map(|c| c.process).collect();
            let (phase, ready) = if procs.iter().all(|p| procfs::alive(*p)) {
                (
                    Phase::Running,
                    procfs::ready(pod, &pod.typed_spec().containers),
                )
            } else {
                (Phase::Failed, false)
            };
            if (phase, ready) != (pod.phase, pod.ready) {
                pod.phase = phase;
                pod.ready = ready;
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

    fn stop_pods(&self, pods: &[Pod]) {
        if pods.is_empty() {
            return;
        }
        for p in pods {
            self.say(format!("stopping pod {} on {}", p.key(), p.node));
        }
        let names: Vec<String> = pods.iter().map(|p| p.netns.clone()).collect();
        let procs: Vec<ProcId> = pods
            .iter()
            .flat_map(|p| p.containers.iter().filter_map(|c| c.process))
            .collect();
        let grace = pods
            .iter()
            .filter_map(Pod::termination_grace)
            .max()
            .unwrap_or(process::GRACE);
        process::stop(&names, &procs, grace);
        let refs: Vec<&Pod> = pods.iter().collect();
        netns::delete_pods(&self.tools, &self.cluster, &refs);
        dns::remove(&names);
        for p in pods {
            let _ = std::fs::remove_dir_all(
                self.cfg
                    .state_dir
                    .join("logs")
                    .join(&p.namespace)
                    .join(&p.name),
            );
        }
    }

    /// Finds a pod by name, or `deploy/NAME` / `deployment/NAME` for a
    /// running pod of that Deployment.
    pub fn find_pod(&self, namespace: &str, name: &str) -> Result<&Pod> {
        if let Some(d) = name
            .strip_prefix("deploy/")
            .or_else(|| name.strip_prefix("deployment/"))
        {
            return self
                .cluster
                .pods
                .values()
                .filter(|p| {
                    p.namespace == namespace && p.owner.as_ref().is_some_and(|o| o.deployment == d)
                })
                .min_by_key(|p| (p.phase != Phase::Running, p.created, p.name.clone()))
                .ok_or_else(|| not_found("deployment", &format!("{namespace}/{d}")));
        }
        let key = format!("{namespace}/{name}");
        self.cluster.pods.get(&key).ok_or_else(|| {
            let elsewhere: Vec<&str> = self
                .cluster
                .pods
                .values()
                .filter(|p| p.name == name)
                .map(|p| p.namespace.as_str())
                .collect();
            let hint = match elsewhere.first() {
                Some(ns) => format!(" (it exists in namespace {ns}: add -n {ns})"),
                None => String::new(),
            };
            SandboxError::Invalid(format!("pod {key:?} not found{hint}"))
        })
    }
}

fn not_found(kind: &str, name: &str) -> SandboxError {
    SandboxError::Invalid(format!("{kind} {name:?} not found"))
}

/// Last `n` lines of a file ("" when it cannot be read).
pub fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Last `n` lines of a file, indented behind a `|` gutter to quote them in a
/// message.
pub fn quoted_tail(path: &std::path::Path, n: usize) -> String {
    tail(path, n)
        .lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
