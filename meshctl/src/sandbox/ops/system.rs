//! Running the mesh's system components in a sandbox: the control-plane
//! namespace, tokens, the host port forwarder, the controller (waited for
//! until `/ready`), and per node a kubelet prober, a ztunnel and a node agent
//! (started, never waited for). Also stopping, starting and restarting any of them; a
//! ztunnel restarts the way a surging DaemonSet update replaces it ([`Sandbox::replace_ztunnel`]).

use std::time::{Duration, Instant};

use super::proxies::{ADMIN_PORT as PROXY_ADMIN_PORT, READY_PORT};
use super::sandbox::Sandbox;
use super::tokens;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::logs::quoted_tail;
use crate::sandbox::host::{admin, forward, netns, process, procfs, state};
use crate::sandbox::model::addresses::netns_name;
use crate::sandbox::model::control::{
    ADMIN_PORT, CONTROL_IP, Component, ControlPlane, NodeProxyProgram, SystemProcess, XDS_PORT,
};
use crate::sandbox::model::env;
use crate::sandbox::model::ids::ProcId;

/// Longest wait for the controller's `/ready`.
pub const CONTROLLER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one admin request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a replacing ztunnel to be ready and serve every pod its predecessor does.
pub const ZTUNNEL_TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// What `up` starts besides the nodes.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Start a ztunnel and a node agent on every node.
    pub ztunnel: bool,
    /// Host port for the admin endpoint (0: any free port; `None`: 15014 if
    /// free, else any free port).
    pub admin_port: Option<u16>,
    /// Host port for the gRPC endpoint (0: any free port).
    pub xds_port: u16,
    /// Extra arguments for every node's `ztunnel proxy`.
    pub ztunnel_args: Vec<String>,
    /// Extra arguments for every waypoint.
    pub waypoint_args: Vec<String>,
    /// Node proxy programs replacing `ztunnel proxy`.
    pub node_proxies: Vec<NodeProxyProgram>,
}

/// The outcome of [`Sandbox::replace_ztunnel`].
#[derive(Debug, Clone, Copy)]
pub struct Takeover {
    /// The ztunnel now recorded and serving.
    pub process: ProcId,
    /// The replaced one, still running, and how long its drain may take before it is killed.
    pub predecessor: Option<(ProcId, Duration)>,
}

/// Ends a replaced ztunnel: SIGTERM (it drains), SIGKILL once `grace` has passed.
pub fn drain(predecessor: ProcId, grace: Duration) {
    process::stop(&[], &[predecessor], grace);
}

/// Which components a `start`/`stop`/`restart` verb names.
pub fn select(sb: &Sandbox, kind: &str, node: Option<&str>) -> Result<Vec<Component>> {
    let nodes: Vec<String> = match node {
        Some(n) => {
            if sb.cluster.node(n).is_none() {
                let names: Vec<&str> = sb.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
                return Err(SandboxError::Invalid(format!(
                    "no node {n:?} (nodes: {})",
                    names.join(", ")
                )));
            }
            vec![n.to_string()]
        }
        None => sb.cluster.nodes.iter().map(|n| n.name.clone()).collect(),
    };
    match kind {
        "controller" if node.is_some() => Err(SandboxError::Invalid(
            "the controller is not per node: drop --node".into(),
        )),
        "controller" => Ok(vec![Component::Controller]),
        "ztunnel" => Ok(nodes.into_iter().map(Component::Ztunnel).collect()),
        "node-agent" => Ok(nodes.into_iter().map(Component::NodeAgent).collect()),
        "kubelet" => Ok(nodes.into_iter().map(Component::Kubelet).collect()),
        other => Err(SandboxError::Invalid(format!(
            "unknown component {other:?}: use controller, ztunnel, node-agent or kubelet"
        ))),
    }
}

impl Sandbox {
    /// Creates the control-plane namespace, the node tokens and the host
    /// port forwarder, starts the controller and waits until it is ready,
    /// then (unless disabled) starts each node's ztunnel and node agent.
    pub fn start_system(&mut self, opts: &SystemOptions) -> Result<()> {
        let layout = self.layout();
        let controller_bin = self.cfg.bin_dir.join("controller");
        if !controller_bin.is_file() {
            return Err(SandboxError::Invalid(format!(
                "controller binary not found at {} (build it with `cargo build -p controller`, \
                 or point --bin-dir at the folder holding it)",
                controller_bin.display()
            )));
        }
        let netns = netns_name(&self.cluster.name, "control");
        // Recorded before it exists, so a failure from here on is cleaned up.
        self.cluster.control = Some(ControlPlane {
            netns: netns.clone(),
            ip: CONTROL_IP,
            admin_port: 0,
            xds_port: 0,
            forwarder: None,
            processes: Vec::new(),
            ztunnel_args: opts.ztunnel_args.clone(),
            waypoint_args: opts.waypoint_args.clone(),
            node_proxies: opts.node_proxies.clone(),
        });
        self.save()?;
        self.say(format!(
            "creating the control plane namespace ({CONTROL_IP})"
        ));
        netns::create_control(&self.tools, &self.cluster, &netns, CONTROL_IP)?;
        let nodes: Vec<String> = self.cluster.nodes.iter().map(|n| n.name.clone()).collect();
        tokens::provision(&layout, &nodes)?;
        // The config folders exist before the controller first scans them.
        for dir in ["manifests", "pods"].map(|d| self.cfg.state_dir.join(d)) {
            std::fs::create_dir_all(&dir)
                .map_err(SandboxError::io(format!("creating {}", dir.display())))?;
        }
        for dir in [layout.ca_dir(), layout.netns_dir(), layout.zds_dir()] {
            // Private: the CA folder holds the root's private key.
            state::private_dir(&dir)?;
        }

        let admin = match opts.admin_port {
            Some(p) => forward::bind(p, "admin", "--admin-port")?,
            // The default port is a convenience: another sandbox holding it
            // must not stop this one from coming up.
            None => match forward::bind(ADMIN_PORT, "admin", "--admin-port") {
                Ok(l) => l,
                Err(_) => forward::bind(0, "admin", "--admin-port")?,
            },
        };
        let xds = forward::bind(opts.xds_port, "gRPC (xDS)", "--xds-port")?;
        let port = |l: &std::net::TcpListener| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(SandboxError::io("reading a forwarded port"))
        };
        let (admin_port, xds_port) = (port(&admin)?, port(&xds)?);
        let forwarder =
            forward::spawn(&self.cfg, &netns, &[(&admin, ADMIN_PORT), (&xds, XDS_PORT)])?;
        if let Some(c) = self.cluster.control.as_mut() {
            c.admin_port = admin_port;
            c.xds_port = xds_port;
            c.forwarder = Some(forwarder);
        }
        self.save()?;
        // The forwarder holds its own copies of the listeners now.
        drop((admin, xds));

        self.start_component(&Component::Controller)?;
        for node in &nodes {
            // Pods' health probes run whether or not the mesh's node proxies do.
            let kubelet = Component::Kubelet(node.clone());
            if let Err(e) = self.start_component(&kubelet) {
                self.say(format!("warning: {}: {e}", kubelet.name()));
            }
        }
        if opts.ztunnel {
            for node in nodes {
                for c in [Component::NodeAgent(node.clone()), Component::Ztunnel(node)] {
                    // Not waited for and not fatal: the node proxies must
                    // not keep the rest of the sandbox from coming up.
                    if let Err(e) = self.start_component(&c) {
                        self.say(format!("warning: {}: {e}", c.name()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts one component with its recorded (or default) command line;
    /// the controller is waited for until ready. Already running: no-op.
    pub fn start_component(&mut self, component: &Component) -> Result<ProcId> {
        let layout = self.layout();
        let control = self.control()?.clone();
        if let Some(p) = control.find(component).and_then(|p| p.process)
            && procfs::alive(p)
        {
            return Ok(p);
        }
        let netns = match component.node() {
            None => control.netns.clone(),
            Some(n) => self
                .cluster
                .node(n)
                .map(|n| n.netns.clone())
                .ok_or_else(|| SandboxError::Invalid(format!("no node {n:?}")))?,
        };
        let record = control.find(component).cloned().unwrap_or_else(|| {
            let launch = control.launch(&layout, component);
            SystemProcess {
                component: component.clone(),
                netns,
                argv: launch.argv,
                env: launch.env,
                log: layout.log(component),
                process: None,
            }
        });
        if let Component::NodeAgent(node) = component {
            // A leftover socket of a killed agent would make the new one fail to bind.
            let _ = std::fs::remove_file(layout.zds_socket(node));
        }
        self.say(format!("starting {}", component.name()));
        let spawned = self.spawn_recorded(component, &record)?;
        let mut record = record;
        record.process = Some(spawned);
        if let Some(c) = self.cluster.control.as_mut() {
            match c.find_mut(component) {
                Some(r) => *r = record,
                None => c.processes.push(record),
            }
        }
        self.save()?;
        if *component == Component::Controller {
            self.wait_controller_ready(spawned)?;
        }
        Ok(spawned)
    }

    /// Stops one component: SIGTERM, then SIGKILL once its own shutdown
    /// deadline has passed ([`SystemProcess::stop_grace`]); false when it was
    /// not running.
    pub fn stop_component(&mut self, component: &Component) -> Result<bool> {
        let record = self.control()?.find(component);
        let running =
            record.and_then(|r| Some((r.process.filter(|p| procfs::alive(*p))?, r.stop_grace())));
        if let Some((p, grace)) = running {
            self.say(format!("stopping {} (pid {})", component.name(), p.pid));
            process::stop(&[], &[p], grace);
        }
        if let Some(r) = self
            .cluster
            .control
            .as_mut()
            .and_then(|c| c.find_mut(component))
        {
            r.process = None;
        }
        self.save()?;
        Ok(running.is_some())
    }

    /// Replaces `node`'s running ztunnel as a surging DaemonSet update does: starts a new
    /// process with the recorded command line beside the old one (pod listeners and admin
    /// endpoints are SO_REUSEPORT), waits until the new one answers `/healthz/ready` (which
    /// holds until the agent's snapshot is applied and every pod's listeners are bound) and
    /// serves every pod the old one serves, records it, then SIGTERMs the old one and waits
    /// for its drain to end. The record names one process at every step: the old one until
    /// the new one took over. If the new one fails to take over, it is stopped and the old one
    /// keeps serving (and stays recorded). A ztunnel that is not running is simply started; a
    /// foreign node proxy (`up --node-proxy`), whose ports are not shared, is stopped, then
    /// started.
    ///
    /// The old one is left running, unrecorded: the caller ends it with [`drain`] once it
    /// has let go of the sandbox's lock, so other verbs need not wait for the drain.
    pub fn replace_ztunnel(&mut self, node: &str) -> Result<Takeover> {
        let component = Component::Ztunnel(node.to_string());
        let control = self.control()?.clone();
        let old = control.find(&component).cloned();
        let running = old
            .as_ref()
            .and_then(|r| Some((r.process.filter(|p| procfs::alive(*p))?, r.clone())));
        let started = |process| Takeover {
            process,
            predecessor: None,
        };
        let Some((old_proc, record)) = running else {
            return self.start_component(&component).map(started);
        };
        if control.node_proxy(node).is_some() {
            self.stop_component(&component)?;
            return self.start_component(&component).map(started);
        }
        self.say(format!(
            "starting a new {} beside pid {}",
            component.name(),
            old_proc.pid
        ));
        let new_proc = self.spawn_recorded(&component, &record)?;
        if let Err(e) = wait_takeover(&record, old_proc, new_proc) {
            self.say(format!(
                "the new {} did not take over: stopping it (pid {}); pid {} keeps serving",
                component.name(),
                new_proc.pid,
                old_proc.pid
            ));
            process::stop(&[], &[new_proc], record.stop_grace());
            return Err(e);
        }
        if let Some(r) = self
            .cluster
            .control
            .as_mut()
            .and_then(|c| c.find_mut(&component))
        {
            r.process = Some(new_proc);
        }
        self.save()?;
        self.say(format!(
            "pid {} serves every pod: pid {} is to drain",
            new_proc.pid, old_proc.pid
        ));
        Ok(Takeover {
            process: new_proc,
            predecessor: Some((old_proc, record.stop_grace())),
        })
    }

    /// Polls the controller's `/ready` (inside its namespace) until it
    /// answers 200; fails early if the process exits.
    /// Starts `component` as `record` says: its command line, environment, namespace and log.
    fn spawn_recorded(&self, component: &Component, record: &SystemProcess) -> Result<ProcId> {
        let mut env = env::system_env(&self.cfg.bin_dir);
        env.extend(record.env.iter().cloned());
        process::spawn_in(
            &self.tools,
            &record.netns,
            &record.argv,
            &env,
            &record.log,
            &component.name(),
        )
    }

    fn wait_controller_ready(&self, proc: ProcId) -> Result<()> {
        let control = self.control()?;
        let log = self.layout().log(&Component::Controller);
        let failed = |why: String| SandboxError::NotReady {
            what: "controller".into(),
            why,
            log: log.display().to_string(),
            tail: quoted_tail(&log, 20),
        };
        let deadline = Instant::now() + CONTROLLER_READY_TIMEOUT;
        loop {
            if !procfs::alive(proc) {
                return Err(failed("it exited".into()));
            }
            let last = match admin::get(&control.netns, ADMIN_PORT, "/ready", ADMIN_TIMEOUT) {
                Ok(r) if r.status == 200 => break,
                Ok(r) => format!("/ready answered {}", r.status),
                Err(e) => format!("/ready: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "not ready after {}s ({last})",
                    CONTROLLER_READY_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let root = self.layout().root_cert();
        if !root.is_file() {
            return Err(failed(format!("ready, but {} is missing", root.display())));
        }
        self.say(format!(
            "controller ready (admin http://127.0.0.1:{}, xDS 127.0.0.1:{})",
            control.admin_port, control.xds_port
        ));
        Ok(())
    }
}

/// POSTs to `path` on the admin endpoint of the controller in `netns` (loopback: `/debug/*`
/// answers only there).
pub fn controller_post(netns: &str, path: &str) -> Result<admin::Response> {
    admin::post(netns, ADMIN_PORT, path, ADMIN_TIMEOUT).map_err(|e| {
        SandboxError::Invalid(format!(
            "controller admin endpoint: {e} (is it running? `meshctl logs controller`)"
        ))
    })
}

/// GETs `path` from the controller's admin endpoint, from inside its namespace.
pub fn controller_get(netns: &str, path: &str) -> Result<admin::Response> {
    admin::get(netns, ADMIN_PORT, path, ADMIN_TIMEOUT).map_err(|e| {
        SandboxError::Invalid(format!(
            "controller admin endpoint: {e} (is it running? `meshctl logs controller`)"
        ))
    })
}

/// Waits until the ztunnel `new` (started beside `old`, both in `record`'s namespace) answers
/// `/healthz/ready` with 200 and its `/config_dump` serves every pod `old`'s does. Both share
/// the admin ports, so each answer is attributed by its `x-process-id`; the kernel spreads new
/// connections over the two listeners, so polling reaches both.
fn wait_takeover(record: &SystemProcess, old: ProcId, new: ProcId) -> Result<()> {
    let failed = |why: String| SandboxError::NotReady {
        what: format!("the new {} (pid {})", record.component.name(), new.pid),
        why,
        log: record.log.display().to_string(),
        tail: quoted_tail(&record.log, 20),
    };
    let deadline = Instant::now() + ZTUNNEL_TAKEOVER_TIMEOUT;
    let mut ready = false;
    let mut pods: [Option<Vec<String>>; 2] = [None, None];
    let mut last = String::from("no answer yet");
    loop {
        if !procfs::alive(new) {
            return Err(failed("it exited".into()));
        }
        if !ready {
            match admin::get(&record.netns, READY_PORT, "/healthz/ready", ADMIN_TIMEOUT) {
                Ok(r) if r.process == Some(new.pid) && r.status == 200 => ready = true,
                Ok(r) if r.process == Some(new.pid) => {
                    last = String::from_utf8_lossy(&r.body).trim().to_string();
                }
                Ok(_) => {}
                Err(e) => last = format!("/healthz/ready: {e}"),
            }
        } else if let Ok(r) = admin::get(
            &record.netns,
            PROXY_ADMIN_PORT,
            "/config_dump",
            ADMIN_TIMEOUT,
        ) && r.status == 200
        {
            let served = served_pods(&r.body);
            match r.process {
                Some(p) if p == new.pid => pods[1] = Some(served),
                Some(p) if p == old.pid => pods[0] = Some(served),
                _ => {}
            }
            // The old one gone (it crashed): nothing to compare with.
            if !procfs::alive(old) && pods[1].is_some() {
                return Ok(());
            }
            if let [Some(before), Some(after)] = &pods {
                let missing: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
                if missing.is_empty() {
                    return Ok(());
                }
                last = format!("ready, but not serving {missing:?} yet");
                // Compared afresh: both views move while pods come and go.
                pods = [None, None];
            }
        }
        if Instant::now() >= deadline {
            return Err(failed(format!(
                "no takeover after {}s ({last})",
                ZTUNNEL_TAKEOVER_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `namespace/name` of the pods a ztunnel's `/config_dump` shows up and serving.
fn served_pods(dump: &[u8]) -> Vec<String> {
    let dump: serde_json::Value = serde_json::from_slice(dump).unwrap_or_default();
    let mut pods: Vec<String> = dump["extra"]["workloadState"]
        .as_object()
        .map(|m| {
            m.values()
                .filter(|p| p["state"] == "Up")
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["info"]["namespace"].as_str().unwrap_or_default(),
                        p["info"]["name"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    pods.sort();
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_pods_are_the_dumps_pods_that_are_up() {
        let dump = serde_json::json!({"extra": {"workloadState": {
            "uid-b": {"info": {"namespace": "shop", "name": "b"}, "state": "Up"},
            "uid-a": {"info": {"namespace": "shop", "name": "a"}, "state": "Up"},
            "uid-c": {"info": {"namespace": "shop", "name": "c"}, "state": "Pending"},
        }}});
        let pods = served_pods(dump.to_string().as_bytes());
        assert_eq!(pods, ["shop/a", "shop/b"]);
        assert!(served_pods(b"not json").is_empty());
    }
}
