//! The sandbox verbs: `up`, `get`, `apply`, `delete`, `label`, `exec`,
//! `logs`, `start`/`stop`/`restart` of system components, `config dump`,
//! `down` (and the hidden `sandbox-reaper`, `sandbox-forward` and
//! `sandbox-container`).

use std::path::PathBuf;

use super::output;
use crate::sandbox::config::Config;
use crate::sandbox::console;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::container::{self, Launch};
use crate::sandbox::host::logs::tail;
use crate::sandbox::host::netns::{self, Tools};
use crate::sandbox::host::{forward, procfs, reaper, state, teardown};
use crate::sandbox::model::addresses::MAX_NODES;
use crate::sandbox::model::cluster::Cluster;
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::manifest::load_path;
use crate::sandbox::model::objects::Object;
use crate::sandbox::ops::findings::{self, Finding};
use crate::sandbox::ops::sandbox::Sandbox;
use crate::sandbox::ops::system::{self, SystemOptions};

/// Options every verb takes.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Sandbox to act on; several can run side by side.
    #[arg(long, global = true, env = "MESHCTL_SANDBOX", default_value = crate::sandbox::config::DEFAULT_SANDBOX)]
    pub sandbox: String,
    /// State folder of the sandbox [default: /run/meshctl/<sandbox>].
    #[arg(long, global = true, env = "MESHCTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Folder with the meshctl/ztunnel/controller/waypoint binaries pods run
    /// [default: the folder of this meshctl].
    #[arg(long, global = true, env = "MESHCTL_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl GlobalArgs {
    /// The sandbox these options select.
    pub fn config(&self) -> Result<Config> {
        Config::new(&self.sandbox, self.state_dir.clone(), self.bin_dir.clone())
    }
}

/// Sandbox verbs.
#[derive(clap::Subcommand, Debug)]
pub enum SandboxCommand {
    /// Build a sandbox cluster from a folder (or file) of Kubernetes manifests.
    Up(UpArgs),
    /// List pods, services, namespaces or nodes, or show the controller.
    Get(GetArgs),
    /// Create or update objects from a file or folder (`-` for stdin).
    Apply(FileArgs),
    /// Delete the objects named in a file or folder.
    Delete(FileArgs),
    /// Set (`key=value`) or remove (`key-`) labels on a namespace or pod.
    Label(LabelArgs),
    /// Run a command inside a pod's network namespace.
    Exec(ExecArgs),
    /// Print a pod's output, or a system component's (controller, ztunnel,
    /// node-agent).
    Logs(LogsArgs),
    /// Start a stopped system component (controller, ztunnel, node-agent).
    Start(ComponentArgs),
    /// Stop a system component (controller, ztunnel, node-agent).
    Stop(ComponentArgs),
    /// Restart a system component with the same arguments.
    Restart(ComponentArgs),
    /// The controller's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Tear the sandbox down: processes, namespaces, files.
    Down(DownArgs),
    /// Watch an owner process and tear the sandbox down when it exits.
    #[command(hide = true)]
    SandboxReaper(ReaperArgs),
    /// Forward inherited host listeners into a namespace.
    #[command(hide = true)]
    SandboxForward(ForwardArgs),
    /// Run a pod's process confined (what pods and `exec` are started with).
    #[command(hide = true)]
    SandboxContainer(ContainerArgs),
}

/// `sandbox-container`.
#[derive(clap::Args, Debug)]
pub struct ContainerArgs {
    /// Inherited descriptor holding what to run.
    #[arg(long)]
    pub spec_fd: i32,
    /// What runs, for `ps` (the description is authoritative).
    #[arg(long = "for")]
    pub what: Option<String>,
}

/// `up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Manifests: a folder (its *.yaml, *.yml, *.json) or a file.
    pub folder: Option<PathBuf>,
    /// Number of nodes.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Tear the sandbox down automatically when this process exits.
    #[arg(long)]
    pub owner_pid: Option<i32>,
    /// Do not start a ztunnel and a node agent on each node.
    #[arg(long)]
    pub no_ztunnel: bool,
    /// Host port (on 127.0.0.1) for the controller's admin endpoint; 0 picks
    /// a free port [default: 15014, or a free port when that is taken].
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Host port (on 127.0.0.1) for the controller's xDS and CA endpoint; 0
    /// picks a free port.
    #[arg(long, default_value_t = 0)]
    pub xds_port: u16,
    /// An extra argument for every node's `ztunnel proxy` (repeatable, in
    /// order), e.g. `--ztunnel-arg=--cert-ttl-secs --ztunnel-arg=20`; kept
    /// for restarts.
    #[arg(long = "ztunnel-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub ztunnel_args: Vec<String>,
}

/// `start` / `stop` / `restart`.
#[derive(clap::Args, Debug)]
pub struct ComponentArgs {
    /// controller, ztunnel or node-agent.
    pub component: String,
    /// The node (ztunnel, node-agent); default: every node.
    #[arg(long)]
    pub node: Option<String>,
}

/// `config`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the controller's current configuration (/debug/config_dump).
    Dump,
}

/// `sandbox-forward`.
#[derive(clap::Args, Debug)]
pub struct ForwardArgs {
    /// Namespace to connect in.
    #[arg(long)]
    pub netns: String,
    /// FD=PORT: accept on inherited descriptor FD, connect to 127.0.0.1:PORT.
    #[arg(long = "forward", required = true)]
    pub forwards: Vec<crate::sandbox::host::forward::Forward>,
}

/// `get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// pods (po), services (svc), namespaces (ns), nodes (no) or controller.
    pub kind: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: table (default) or json (pods and controller).
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `apply` / `delete`.
#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// Files or folders of manifests, `-` for stdin.
    #[arg(short, long = "filename", required = true)]
    pub file: Vec<PathBuf>,
}

/// `label`.
#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// namespace (ns) or pod (po).
    pub kind: String,
    /// Object name.
    pub name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true)]
    pub labels: Vec<String>,
    /// Namespace of a pod.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Accepted for kubectl compatibility (labels are always overwritten).
    #[arg(long)]
    pub overwrite: bool,
}

/// `exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Pod name, or deploy/NAME for a pod of a Deployment.
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container whose environment to use (default: the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Accepted for kubectl compatibility: stdin is always passed through.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Accepted for kubectl compatibility: the terminal is always inherited.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Pod name, or deploy/NAME; or controller, ztunnel, node-agent (when no
    /// pod of that name exists).
    pub pod: String,
    /// Node of a ztunnel or node agent.
    #[arg(long)]
    pub node: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container (default: the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
}

/// `down`.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// Every sandbox on this machine.
    #[arg(long)]
    pub all: bool,
}

/// `sandbox-reaper`.
#[derive(clap::Args, Debug)]
pub struct ReaperArgs {
    /// The owner.
    #[arg(long)]
    pub owner_pid: i32,
    /// The owner's start time, guarding against PID reuse.
    #[arg(long)]
    pub owner_start: u64,
}

/// Runs a verb; returns the process exit code.
pub fn run(global: &GlobalArgs, cmd: SandboxCommand) -> Result<i32> {
    let cfg = global.config()?;
    match cmd {
        SandboxCommand::Up(a) => up(&cfg, a).map(|_| 0),
        SandboxCommand::Get(a) => get(&cfg, a).map(|_| 0),
        SandboxCommand::Apply(a) => {
            let objects = load_all(&a.file)?;
            let mut sb = Sandbox::open(&cfg)?;
            sb.apply(objects.clone())?;
            Ok(report(&findings::of_applied(&cfg.state_dir, &objects)))
        }
        SandboxCommand::Delete(a) => {
            let objects = load_all(&a.file)?;
            Sandbox::open(&cfg)?.delete(&objects).map(|_| 0)
        }
        SandboxCommand::Label(a) => label(&cfg, a).map(|_| 0),
        SandboxCommand::Exec(a) => exec(&cfg, a),
        SandboxCommand::Logs(a) => logs(&cfg, a).map(|_| 0),
        SandboxCommand::Start(a) => components(&cfg, a, Action::Start).map(|_| 0),
        SandboxCommand::Stop(a) => components(&cfg, a, Action::Stop).map(|_| 0),
        SandboxCommand::Restart(a) => components(&cfg, a, Action::Restart).map(|_| 0),
        SandboxCommand::Config(ConfigCommand::Dump) => config_dump(&cfg).map(|_| 0),
        SandboxCommand::Down(a) => down(&cfg, a).map(|_| 0),
        SandboxCommand::SandboxForward(a) => forward::run(&a.netns, &a.forwards).map(|_| 0),
        SandboxCommand::SandboxContainer(a) => Ok(container::run(a.spec_fd)),
        SandboxCommand::SandboxReaper(a) => reaper::run(
            &cfg,
            ProcId {
                pid: a.owner_pid,
                start: a.owner_start,
            },
        )
        .map(|_| 0),
    }
}

/// Prints what the mesh will not act on (or only in part) among applied objects, as kubectl
/// prints admission errors; the exit code is 1 when any is an error.
fn report(findings: &[Finding]) -> i32 {
    for finding in findings {
        if finding.error {
            eprintln!("error: {}", finding.text);
        } else {
            eprintln!("{}", finding.text);
        }
    }
    i32::from(findings.iter().any(|f| f.error))
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for p in paths {
        objects.extend(load_path(p)?);
    }
    Ok(objects)
}

fn up(cfg: &Config, args: UpArgs) -> Result<()> {
    netns::require_root()?;
    let tools = Tools::find()?;
    if args.nodes == 0 || args.nodes > MAX_NODES {
        return Err(SandboxError::Invalid(format!(
            "--nodes must be 1..={MAX_NODES}"
        )));
    }
    if let Some(warning) = container::unreachable_bin_dir(&cfg.bin_dir) {
        say!("warning: {warning}");
    }
    // Fail on bad manifests before building anything.
    let objects = match &args.folder {
        Some(f) => load_path(f)?,
        None => Vec::new(),
    };
    let owner =
        match args.owner_pid {
            Some(pid) => Some(procfs::proc_id(pid).ok_or_else(|| {
                SandboxError::Invalid(format!("--owner-pid {pid}: no such process"))
            })?),
            None => None,
        };
    for name in teardown::reap_stale(&tools, &cfg.name) {
        say!("removed sandbox {name}: its owner process is gone");
    }
    let entry = teardown::registry_entry(&cfg.name);
    if entry != cfg.state_dir && (entry.exists() || entry.is_symlink()) {
        let target = std::fs::read_link(&entry).unwrap_or_else(|_| entry.clone());
        if target != cfg.state_dir {
            return Err(SandboxError::AlreadyUp(cfg.name.clone()));
        }
    }
    let lock = state::lock(&cfg.state_dir, &cfg.name, true)?;
    if let Ok(old) = state::load(&cfg.state_dir, &cfg.name) {
        match old.owner {
            Some(o) if !procfs::alive(o) => {
                say!("removing sandbox {}: its owner process is gone", cfg.name);
                teardown::destroy_runtime(&tools, &cfg.name, Some(&old));
            }
            _ => return Err(SandboxError::AlreadyUp(cfg.name.clone())),
        }
    }
    let prefix = crate::sandbox::model::addresses::netns_prefix(&cfg.name);
    if !netns::list_netns(&prefix).is_empty() {
        say!("removing leftovers of an earlier sandbox {}", cfg.name);
        teardown::destroy_runtime(&tools, &cfg.name, None);
    }
    if entry != cfg.state_dir && !entry.is_symlink() {
        let _ = std::fs::create_dir_all(crate::sandbox::config::STATE_ROOT);
        std::os::unix::fs::symlink(&cfg.state_dir, &entry)
            .map_err(SandboxError::io(format!("registering {}", entry.display())))?;
    }
    let system_opts = SystemOptions {
        ztunnel: !args.no_ztunnel,
        admin_port: args.admin_port,
        xds_port: args.xds_port,
        ztunnel_args: args.ztunnel_args,
    };
    let mut cluster = Cluster::new(&cfg.name, args.nodes, state::now());
    cluster.owner = owner;
    say!(
        "building sandbox {} ({} nodes, state in {})",
        cfg.name,
        args.nodes,
        cfg.state_dir.display()
    );
    let mut sb = Sandbox::create(cfg, tools.clone(), lock, cluster)?;
    // A panic half way must not leave namespaces behind either.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Some(owner) = owner {
            // Started first: from here on, the owner dying cleans up.
            sb.cluster.reaper = Some(reaper::spawn(cfg, owner)?);
            sb.save()?;
        }
        sb.build_nodes()?;
        // The mesh is installed before the workloads, as on a cluster.
        sb.start_system(&system_opts)?;
        if !objects.is_empty() {
            sb.apply(objects.clone())?;
            // Reported, but the sandbox stays up: what the mesh cannot read is what a user
            // comes to fix.
            report(&findings::of_applied(&cfg.state_dir, &objects));
        }
        Ok(())
    }))
    .unwrap_or_else(|_| {
        Err(SandboxError::Invalid(
            "internal error while building the sandbox".into(),
        ))
    });
    if let Err(e) = built {
        eprintln!("removing the partly built sandbox {}", cfg.name);
        teardown::destroy(&tools, &cfg.name, &cfg.state_dir, Some(&sb.cluster));
        return Err(e);
    }
    console::emit(&output::summary(&sb.cluster, state::now()));
    if let Some(c) = &sb.cluster.control {
        say!(
            "\ncontroller {}: admin http://127.0.0.1:{}, xDS/CA 127.0.0.1:{} (`meshctl get controller`)",
            c.ip,
            c.admin_port,
            c.xds_port
        );
    }
    Ok(())
}

fn get(cfg: &Config, a: GetArgs) -> Result<()> {
    let sb = Sandbox::open(cfg)?;
    let ns = if a.all_namespaces {
        None
    } else {
        Some(a.namespace.as_str())
    };
    let now = state::now();
    let json = match a.output.as_deref() {
        None | Some("wide") => false,
        Some("json") => true,
        Some(o) => {
            return Err(SandboxError::Invalid(format!(
                "-o {o}: supported formats are json and wide"
            )));
        }
    };
    let text = match a.kind.as_str() {
        "pods" | "pod" | "po" if json => output::pods_json(&sb.cluster, ns) + "\n",
        "pods" | "pod" | "po" => output::pods(&sb.cluster, ns, now),
        "services" | "service" | "svc" => output::svcs(&sb.cluster, ns, now),
        "namespaces" | "namespace" | "ns" => output::namespaces(&sb.cluster, now),
        "nodes" | "node" | "no" => output::nodes(&sb.cluster, now),
        "controller" | "controllers" => {
            let c = sb.control()?;
            let layout = sb.layout();
            if json {
                output::controller_json(c, &layout) + "\n"
            } else {
                output::controller(c, &layout)
            }
        }
        other => {
            return Err(SandboxError::Invalid(format!(
                "unknown resource type {other:?}: use pods, svc, ns, nodes or controller"
            )));
        }
    };
    console::emit(&text);
    Ok(())
}

fn label(cfg: &Config, a: LabelArgs) -> Result<()> {
    let (kind, ns) = match a.kind.as_str() {
        "namespace" | "namespaces" | "ns" => ("Namespace", None),
        "pod" | "pods" | "po" => ("Pod", Some(a.namespace.as_str())),
        other => {
            return Err(SandboxError::Invalid(format!(
                "cannot label {other:?}: use namespace or pod"
            )));
        }
    };
    let mut sb = Sandbox::open(cfg)?;
    let line = sb.label(kind, ns, &a.name, &a.labels)?;
    say!("{line}");
    Ok(())
}

fn exec(cfg: &Config, a: ExecArgs) -> Result<i32> {
    // The lock is held only to read the pod: the command may run for long.
    let launch = {
        let sb = Sandbox::open(cfg)?;
        let pod = sb.find_pod(&a.namespace, &a.pod)?.clone();
        let node = sb
            .cluster
            .node(&pod.node)
            .cloned()
            .ok_or_else(|| SandboxError::Invalid(format!("node {} missing", pod.node)))?;
        let spec = pod.typed_spec();
        let index = match &a.container {
            Some(c) => spec
                .containers
                .iter()
                .position(|x| &x.name == c)
                .ok_or_else(|| {
                    SandboxError::Invalid(format!("container {c:?} not found in pod {}", pod.key()))
                })?,
            None if spec.containers.is_empty() => {
                return Err(SandboxError::Invalid("pod has no containers".into()));
            }
            None => 0,
        };
        let mut launch =
            Launch::for_container(&sb.cfg, &pod, &node, index, sb.granted_files(&pod))?;
        // As kubectl exec: inside the running container; a container that
        // runs nothing (no command) gets namespaces of its own.
        launch.join = pod
            .containers
            .get(index)
            .and_then(|c| c.process)
            .filter(|p| procfs::alive(*p));
        launch.argv = a.command.clone();
        launch
    };
    let (mut cmd, _description) = launch.command()?;
    let status = cmd
        .status()
        .map_err(SandboxError::io(format!("running {}", a.command.join(" "))))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn logs(cfg: &Config, a: LogsArgs) -> Result<()> {
    let sb = Sandbox::open(cfg)?;
    let is_component = ["controller", "ztunnel", "node-agent"].contains(&a.pod.as_str());
    // A pod of that name wins, as kubectl would find it.
    let path = match sb.find_pod(&a.namespace, &a.pod) {
        Err(_) if is_component => {
            let mut selected = system::select(&sb, &a.pod, a.node.as_deref())?;
            if selected.len() > 1 {
                let nodes: Vec<&str> = selected.iter().filter_map(|c| c.node()).collect();
                return Err(SandboxError::Invalid(format!(
                    "{} runs on every node: add --node ({})",
                    a.pod,
                    nodes.join(", ")
                )));
            }
            let component = selected
                .pop()
                .ok_or_else(|| SandboxError::Invalid(format!("no {} in this sandbox", a.pod)))?;
            sb.layout().log(&component)
        }
        Err(e) => return Err(e),
        Ok(pod) => {
            let container = match &a.container {
                Some(c) => c.clone(),
                None => pod
                    .containers
                    .first()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            };
            sb.log_path(pod, &container)
        }
    };
    match a.tail {
        Some(n) => say!("{}", tail(&path, n)),
        None => {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                // A container without a command never wrote anything.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(SandboxError::io(format!("reading {}", path.display()))(e)),
            };
            console::emit(&String::from_utf8_lossy(&text));
        }
    }
    Ok(())
}

/// What `start`/`stop`/`restart` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Restart,
}

fn components(cfg: &Config, a: ComponentArgs, action: Action) -> Result<()> {
    let mut sb = Sandbox::open(cfg)?;
    let selected = system::select(&sb, &a.component, a.node.as_deref())?;
    for c in &selected {
        if action != Action::Start && !sb.stop_component(c)? && action == Action::Stop {
            say!("{} was not running", c.name());
        }
        if action != Action::Stop {
            let p = sb.start_component(c)?;
            say!("{} running (pid {})", c.name(), p.pid);
        }
    }
    Ok(())
}

fn config_dump(cfg: &Config) -> Result<()> {
    // The lock is released before the request: the dump may be large.
    let netns = Sandbox::open(cfg)?.control()?.netns.clone();
    let response = system::controller_get(&netns, "/debug/config_dump")?;
    if response.status != 200 {
        return Err(SandboxError::Invalid(format!(
            "controller answered {} to /debug/config_dump: {}",
            response.status,
            String::from_utf8_lossy(&response.body).trim()
        )));
    }
    let text = match serde_json::from_slice::<serde_json::Value>(&response.body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&response.body).into_owned(),
    };
    console::emit(&(text + "\n"));
    Ok(())
}

fn down(cfg: &Config, a: DownArgs) -> Result<()> {
    if a.all {
        let done = teardown::down_all(&cfg.bin_dir)?;
        if done.is_empty() {
            say!("no sandboxes found");
        }
        for name in done {
            say!("sandbox {name} removed");
        }
        return Ok(());
    }
    if teardown::down(cfg)? {
        say!("sandbox {} removed", cfg.name);
    } else {
        say!("sandbox {} is not up", cfg.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SandboxCommand,
    }

    #[test]
    fn ztunnel_args_accept_values_that_look_like_flags() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "up",
            "--ztunnel-arg",
            "--cert-ttl-secs",
            "--ztunnel-arg=20",
            "--nodes",
            "3",
        ])
        .unwrap();
        let SandboxCommand::Up(up) = cli.command else {
            panic!("not `up`");
        };
        assert_eq!(up.ztunnel_args, ["--cert-ttl-secs", "20"]);
        assert_eq!(up.nodes, 3);
    }
}
