//! Running the sandbox verbs: `get`, `apply`, `delete`, `analyze`, `check`, `stat`, `edges`,
//! `routes`, `proxy-config`, `dashboard`, `proxy-status`, `tap`, `top`, `label`, `exec`,
//! `logs`, `start`/`stop`/`restart` of system components, `config dump`,
//! `down`, the hidden `sandbox-reaper`, `sandbox-forward`, `sandbox-kubelet` and
//! `sandbox-container`, and `up` (in [`super::up`]).

use std::path::PathBuf;

use super::args::{
    AnalyzeArgs, CheckArgs, ComponentArgs, ConfigCommand, DownArgs, EdgesArgs, ExecArgs, GetArgs,
    GlobalArgs, LabelArgs, LogsArgs, OutputArgs, ProxyConfigArgs, RoutesArgs, SandboxCommand,
    StatArgs, TapArgs, TopArgs,
};
use super::live;
use super::output;
use super::up::up;
use crate::operator::check as check_report;
use crate::operator::findings::{print_analysis, report};
use crate::operator::format::wants_json;
use crate::operator::proxy_status::{self, Expected};
use crate::operator::traffic;
use crate::sandbox::console;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::container::{self, Launch};
use crate::sandbox::host::logs::tail;
use crate::sandbox::host::{forward, prober, procfs, reaper, state, teardown};
use crate::sandbox::model::control::Component;
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::manifest::load_path;
use crate::sandbox::model::objects::Object;
use crate::sandbox::model::proxy_config::Section;
use crate::sandbox::model::tap::TapKind;
use crate::sandbox::ops::routes;
use crate::sandbox::ops::sandbox::Sandbox;
use crate::sandbox::ops::stat;
use crate::sandbox::ops::system;
use crate::sandbox::ops::tap::{self, TapOptions};
use crate::sandbox::ops::{check, findings, preflight, proxies};
use crate::sandbox::settings::SandboxSettings;

/// Runs a verb; returns the process exit code.
pub fn run(global: &GlobalArgs, cmd: SandboxCommand) -> Result<i32> {
    let cfg = global.settings()?;
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
        SandboxCommand::Analyze(a) => analyze(&cfg, a),
        SandboxCommand::Check(a) => check(&cfg, a),
        SandboxCommand::Stat(a) => stat(&cfg, a).map(|_| 0),
        SandboxCommand::Edges(a) => edges(&cfg, a).map(|_| 0),
        SandboxCommand::Routes(a) => routes(&cfg, a).map(|_| 0),
        SandboxCommand::ProxyConfig(a) => proxy_config(&cfg, a).map(|_| 0),
        SandboxCommand::Dashboard(a) => dashboard(&cfg, a).map(|_| 0),
        SandboxCommand::ProxyStatus(a) => proxy_status(&cfg, a),
        SandboxCommand::Ca(a) => super::ca::run(&cfg, a),
        SandboxCommand::Tap(a) => tap(&cfg, a).map(|_| 0),
        SandboxCommand::Top(a) => top(&cfg, a).map(|_| 0),
        SandboxCommand::Label(a) => label(&cfg, a).map(|_| 0),
        SandboxCommand::Exec(a) => exec(&cfg, a),
        SandboxCommand::Logs(a) => logs(&cfg, a).map(|_| 0),
        SandboxCommand::Start(a) => components(&cfg, a, Action::Start).map(|_| 0),
        SandboxCommand::Stop(a) => components(&cfg, a, Action::Stop).map(|_| 0),
        SandboxCommand::Restart(a) => components(&cfg, a, Action::Restart).map(|_| 0),
        SandboxCommand::Config(ConfigCommand::Dump) => config_dump(&cfg).map(|_| 0),
        SandboxCommand::Down(a) => down(&cfg, a).map(|_| 0),
        SandboxCommand::SandboxForward(a) => forward::run(&a.netns, &a.forwards).map(|_| 0),
        SandboxCommand::SandboxKubelet(a) => kubelet(&cfg, &a.node).map(|_| 0),
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

/// The hidden `sandbox-kubelet`: the node's prober, restarting containers whose liveness
/// probe fails under the sandbox's lock.
fn kubelet(cfg: &SandboxSettings, node: &str) -> Result<()> {
    let settings = cfg.clone();
    let restart: prober::Restart = std::sync::Arc::new(move |key, uid, container| {
        let outcome =
            Sandbox::open(&settings).and_then(|mut sb| sb.restart_container(key, uid, container));
        match outcome {
            // The new container is this long-lived process's child: this thread reaps it when
            // it exits, so it never lingers as a zombie that looks alive.
            Ok(Some(started)) => {
                let mut status = 0;
                // SAFETY: waitpid on our own child's pid, with a valid status pointer.
                while unsafe { libc::waitpid(started.pid, &mut status, 0) } < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("restarting container {container} of {key}: {e}"),
        }
    });
    prober::run(&cfg.state_dir, node, restart)
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for p in paths {
        objects.extend(load_path(p)?);
    }
    Ok(objects)
}

/// `analyze`: exit status 1 when any finding is an error, as for `apply`.
fn analyze(cfg: &SandboxSettings, a: AnalyzeArgs) -> Result<i32> {
    if a.file.is_empty() {
        return Err(SandboxError::Invalid(
            "analyze -f FILE...: the files to analyze against the sandbox".to_owned(),
        ));
    }
    let objects = load_all(&a.file)?;
    let state_dir = cfg
        .state_dir
        .join("manifests")
        .is_dir()
        .then_some(cfg.state_dir.as_path());
    let found = findings::of_unapplied(state_dir, &objects).map_err(|source| SandboxError::Io {
        context: "analyzing in a scratch folder".to_owned(),
        source,
    })?;
    Ok(print_analysis(
        &found,
        objects.len(),
        json_output(a.output.as_deref())?,
    ))
}

/// `check`: 0 when every check passed, 1 on any error, 2 on warnings only.
fn check(cfg: &SandboxSettings, a: CheckArgs) -> Result<i32> {
    let json = json_output(a.output.as_deref())?;
    let checks = if a.pre {
        preflight::run(cfg)
    } else {
        check::run(&Sandbox::open(cfg)?)
    };
    Ok(check_report::print(&checks, json))
}

/// `stat`: the table (or JSON) once the window has passed.
fn stat(cfg: &SandboxSettings, a: StatArgs) -> Result<()> {
    let json = json_output(a.watch.output.as_deref())?;
    let w = &a.watch;
    let options = traffic::stat_options(&a.resource, &w.namespace, w.all_namespaces, w.window)
        .map_err(SandboxError::Invalid)?;
    let measured = match &a.prometheus {
        Some(url) => stat::measure_from_prometheus(cfg, &options, url)?,
        None => stat::measure(cfg, &options, |proxies| {
            traffic::window_started(proxies, options.window)
        })?,
    };
    traffic::print_stat(&measured, &options, json);
    Ok(())
}

/// `edges`: the table (or JSON) once the window has passed.
fn edges(cfg: &SandboxSettings, a: EdgesArgs) -> Result<()> {
    let json = json_output(a.watch.output.as_deref())?;
    let w = &a.watch;
    let namespace = traffic::edges_namespace(&a.resource, &w.namespace, w.all_namespaces)
        .map_err(SandboxError::Invalid)?;
    let seen = stat::edges(cfg, namespace.as_deref(), w.window, |proxies| {
        traffic::window_started(proxies, w.window)
    })?;
    traffic::print_edges(&seen, json);
    Ok(())
}

/// `routes`: the table (or JSON) of one service's routes once the window has passed.
fn routes(cfg: &SandboxSettings, a: RoutesArgs) -> Result<()> {
    let json = json_output(a.watch.output.as_deref())?;
    let w = &a.watch;
    let (namespace, name) = traffic::routes_service(&a.resource, &w.namespace, w.all_namespaces)
        .map_err(SandboxError::Invalid)?;
    let measured = routes::measure(cfg, &namespace, &name, w.window, |proxies| {
        traffic::window_started(proxies, w.window)
    })?;
    traffic::print_routes(&measured, json);
    Ok(())
}

/// `proxy-config`: one section of one proxy's config dump.
fn proxy_config(cfg: &SandboxSettings, a: ProxyConfigArgs) -> Result<()> {
    let json = json_output(a.output.as_deref())?;
    let section = Section::parse(&a.section).map_err(SandboxError::Invalid)?;
    let proxy = {
        let sb = Sandbox::open(cfg)?;
        match (a.proxy.as_str(), a.target.split_once('/')) {
            ("ztunnel", _) => proxies::ztunnel(&sb, &a.target)?,
            ("waypoint", Some((namespace, name))) => proxies::waypoint(&sb, namespace, name)?,
            ("waypoint", None) => proxies::waypoint(&sb, "default", &a.target)?,
            (other, _) => {
                return Err(SandboxError::Invalid(format!(
                    "{other}: use ztunnel NODE or waypoint NAMESPACE/NAME"
                )));
            }
        }
    };
    let dump = proxies::config_dump(&proxy)?;
    if json {
        let text = serde_json::to_string_pretty(&section.of(&dump)).unwrap_or_default();
        println!("{text}");
    } else {
        let (header, rows) = section.table(&dump);
        print!("{}", output::table(&header, &rows));
    }
    Ok(())
}

/// `dashboard`: serves until interrupted.
fn dashboard(cfg: &SandboxSettings, a: super::args::DashboardArgs) -> Result<()> {
    let source = crate::dashboard::Source::Sandbox(cfg.clone());
    crate::dashboard::run(source, a.options())
}

/// `proxy-status`: 1 when a proxy is disconnected or has NACKed its config.
fn proxy_status(cfg: &SandboxSettings, a: OutputArgs) -> Result<i32> {
    let json = json_output(a.output.as_deref())?;
    let (all, netns) = {
        let sb = Sandbox::open(cfg)?;
        (proxies::all(&sb), sb.control()?.netns.clone())
    };
    let answer = system::controller_get(&netns, "/debug/syncz")?;
    let syncz: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|e| {
        SandboxError::Invalid(format!(
            "controller /debug/syncz: {e} (status {})",
            answer.status
        ))
    })?;
    let dumps: Vec<_> = all.iter().map(|p| proxies::config_dump(p).ok()).collect();
    let expected: Vec<Expected> = all
        .iter()
        .map(|p| Expected {
            name: p.name.clone(),
            key: p.node_key.clone(),
        })
        .collect();
    let found = proxy_status::statuses(&expected, &syncz, &dumps);
    Ok(proxy_status::print(&found, json))
}

/// `tap`: a line per request or connection until `--max` of them, or forever.
fn tap(cfg: &SandboxSettings, a: TapArgs) -> Result<()> {
    let json = json_output(a.output.as_deref())?;
    let (resource, name) = live::target(&a.resource, "tap")?;
    let kind = a.kind.as_deref().map(TapKind::parse).transpose();
    let options = TapOptions {
        resource,
        name,
        namespace: a.namespace.clone(),
        method: a.method.clone(),
        path: a.path.clone(),
        kind: kind.map_err(SandboxError::Invalid)?,
        until_interrupted: false,
        idle_tick: None,
    };
    let mut shown = 0u64;
    let ready = |tapped| eprintln!("{}", live::tapping(tapped));
    tap::run(cfg, &options, ready, |line| {
        match output::tap_line(line, json) {
            output::TapLine::Event(text) => {
                println!("{text}");
                shown += 1;
            }
            output::TapLine::Dropped(n) => {
                eprintln!("warning: a proxy dropped {n} events: this tap reads too slowly");
            }
            output::TapLine::Unreadable => {}
        }
        a.max.is_none_or(|max| shown < max)
    })
}

/// `top`: the most requested (source, method, path), live.
fn top(cfg: &SandboxSettings, a: TopArgs) -> Result<()> {
    let json = json_output(a.output.as_deref())?;
    live::top(cfg, a, json)
}

/// Whether `-o` asks for JSON, rather than the verb's text or table (`text` and `table` both
/// name it, whichever the verb prints).
fn json_output(output: Option<&str>) -> Result<bool> {
    wants_json(output).map_err(SandboxError::Invalid)
}

fn get(cfg: &SandboxSettings, a: GetArgs) -> Result<()> {
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

fn label(cfg: &SandboxSettings, a: LabelArgs) -> Result<()> {
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

fn exec(cfg: &SandboxSettings, a: ExecArgs) -> Result<i32> {
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

fn logs(cfg: &SandboxSettings, a: LogsArgs) -> Result<()> {
    let sb = Sandbox::open(cfg)?;
    let is_component = ["controller", "ztunnel", "node-agent", "kubelet"].contains(&a.pod.as_str());
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

fn components(cfg: &SandboxSettings, a: ComponentArgs, action: Action) -> Result<()> {
    let sb = Sandbox::open(cfg)?;
    let selected = system::select(&sb, &a.component, a.node.as_deref())?;
    // The sandbox (and its lock) is let go while a replaced ztunnel drains, then opened again
    // for the next component.
    let mut opened = Some(sb);
    for c in &selected {
        let sb = match opened.as_mut() {
            Some(sb) => sb,
            None => opened.insert(Sandbox::open(cfg)?),
        };
        // A ztunnel is replaced without a gap, as a surging DaemonSet update does.
        if let (Action::Restart, Component::Ztunnel(node)) = (action, c) {
            let takeover = sb.replace_ztunnel(node)?;
            say!("{} running (pid {})", c.name(), takeover.process.pid);
            if let Some((old, grace)) = takeover.predecessor {
                // Without the lock: other verbs need not wait for the drain.
                opened = None;
                say!("waiting for pid {} to drain", old.pid);
                system::drain(old, grace);
            }
            continue;
        }
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

fn config_dump(cfg: &SandboxSettings) -> Result<()> {
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

fn down(cfg: &SandboxSettings, a: DownArgs) -> Result<()> {
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
