//! Pods in a running sandbox: reconciling them with the objects (planning
//! in the model, then namespaces, links, hosts files and processes on the
//! host), waiting for them to be ready, stopping them, finding them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::sandbox::{Sandbox, not_found};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::container::Launch;
use crate::sandbox::host::logs::quoted_tail;
use crate::sandbox::host::{cni, dns, netns, process, state};
use crate::sandbox::model::cluster::{Node, Phase, Pod};
use crate::sandbox::model::control::Component;
use crate::sandbox::model::ids::{OsEntropy, ProcId};
use crate::sandbox::model::services::services;

/// Longest `up`/`apply` wait for new pods to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new pod's CNI ADD is retried (the runtime retries a failed sandbox), e.g.
/// while the node agent that `up` just started is not serving yet.
const CNI_RETRY_FOR: Duration = Duration::from_secs(30);

/// Pause between two CNI ADD attempts of one pod.
const CNI_RETRY_PAUSE: Duration = Duration::from_millis(500);

impl Sandbox {
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
            self.attach_networks(&created);
            // Their IPs reach the Pod objects now, as kubelet reports them after CNI ADD.
            self.save()?;
            let views = services(&self.cluster);
            let started: Vec<String> = created
                .iter()
                .filter(|k| self.cluster.pods.get(*k).is_some_and(|p| p.network))
                .cloned()
                .collect();
            for key in &started {
                if let Some(p) = self.cluster.pods.get(key) {
                    dns::write_pod(&self.cluster, p, &views)?;
                }
            }
            for key in &started {
                self.start_pod(key)?;
            }
            self.save()?;
            self.wait_ready(&started);
        }
        self.refresh();
        self.sync()
    }

    /// The CNI plugin a runtime on `node` chains after the main one: the mesh's, when the
    /// node runs its node agent (which installs it); none otherwise.
    fn cni_plugin(&self, node: &str) -> Option<cni::Plugin> {
        let control = self.cluster.control.as_ref()?;
        control.find(&Component::NodeAgent(node.to_string()))?;
        Some(cni::Plugin {
            binary: self.cfg.bin_dir.join(cni::PLUGIN),
            agent_socket: self.layout().cni_socket(node),
        })
    }

    /// Runs the node's CNI chain for new pods whose namespace and link exist (the main
    /// plugin's part is done): the mesh's plugin ADD, retried (after a DEL, as a runtime
    /// tears a failed sandbox down) for [`CNI_RETRY_FOR`], all pods at once. A pod whose ADD
    /// keeps failing does not start: it is marked Failed, and the plugin's error printed.
    fn attach_networks(&mut self, keys: &[String]) {
        let jobs: Vec<(String, Pod, Node, Option<cni::Plugin>)> = keys
            .iter()
            .filter_map(|k| {
                let pod = self.cluster.pods.get(k)?.clone();
                let node = self.cluster.node(&pod.node)?.clone();
                let plugin = self.cni_plugin(&pod.node);
                Some((k.clone(), pod, node, plugin))
            })
            .collect();
        let outcomes: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(key, pod, node, plugin)| {
                    s.spawn(move || {
                        let outcome = match plugin {
                            Some(plugin) => add_with_retries(plugin, pod, node),
                            None => Ok(()),
                        };
                        (key.clone(), outcome)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (key, outcome) in outcomes {
            let Some(pod) = self.cluster.pods.get_mut(&key) else {
                continue;
            };
            match outcome {
                Ok(()) => pod.network = true,
                Err(e) => {
                    pod.phase = Phase::Failed;
                    self.say(format!(
                        "warning: pod {key} not started: its network could not be set up                          (CNI ADD): {e}"
                    ));
                }
            }
        }
    }

    /// The node `pod` is scheduled on.
    fn node_of(&self, pod: &Pod) -> Result<Node> {
        self.cluster
            .node(&pod.node)
            .cloned()
            .ok_or_else(|| not_found("node", &pod.node))
    }

    fn start_pod(&mut self, key: &str) -> Result<()> {
        let Some(pod) = self.cluster.pods.get(key).cloned() else {
            return Ok(());
        };
        let node = self.node_of(&pod)?;
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

    /// Restarts container `name` of pod `key` (if it is still the pod `uid`, running), as
    /// kubelet does when its liveness probe fails: the process is stopped (SIGTERM, its grace,
    /// SIGKILL) and started again, and the restart counted. The new process (a child of this
    /// one), or `None` when there was nothing to restart.
    pub fn restart_container(
        &mut self,
        key: &str,
        uid: &str,
        name: &str,
    ) -> Result<Option<ProcId>> {
        let Some(pod) = self.cluster.pods.get(key).cloned() else {
            return Ok(None);
        };
        let index = pod.containers.iter().position(|c| c.name == name);
        let (Some(index), true) = (index, pod.uid == uid && pod.phase == Phase::Running) else {
            return Ok(None);
        };
        let node = self.node_of(&pod)?;
        self.say(format!(
            "restarting container {name} of pod {key}: its liveness probe failed"
        ));
        if let Some(old) = pod.containers[index].process {
            let grace = pod.termination_grace().unwrap_or(process::GRACE);
            process::stop(&[], &[old], grace);
        }
        let launch =
            Launch::for_container(&self.cfg, &pod, &node, index, self.granted_files(&pod))?;
        let log = self.log_path(&pod, name);
        let started = process::spawn(&launch, &log)?;
        if let Some(st) = self
            .cluster
            .pods
            .get_mut(key)
            .and_then(|p| p.containers.get_mut(index))
        {
            st.process = Some(started);
            st.restarts = st.restarts.saturating_add(1);
        }
        self.save()?;
        Ok(Some(started))
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
                    "warning: not ready after {}s (readiness probe failing, or ports not listening): {}",
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
        // The runtime's CNI DEL, before the namespace goes (the plugin never fails it).
        for p in pods.iter().filter(|p| p.network) {
            if let Some(plugin) = self.cni_plugin(&p.node)
                && let Err(e) = plugin.del(p)
            {
                self.say(format!("warning: pod {}: CNI DEL: {e}", p.key()));
            }
        }
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

/// [`cni::Plugin::add`] until it succeeds or [`CNI_RETRY_FOR`] has passed; a DEL after
/// each failure, as a runtime cleans a failed sandbox up. The last error when it never did.
fn add_with_retries(plugin: &cni::Plugin, pod: &Pod, node: &Node) -> Result<(), String> {
    let deadline = Instant::now() + CNI_RETRY_FOR;
    loop {
        let error = match plugin.add(pod, node) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let _ = plugin.del(pod);
        if Instant::now() + CNI_RETRY_PAUSE >= deadline {
            return Err(error);
        }
        std::thread::sleep(CNI_RETRY_PAUSE);
    }
}
