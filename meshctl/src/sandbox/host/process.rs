//! Container processes: environment, spawning inside a pod's namespace,
//! liveness, readiness and stopping.

use std::fs::OpenOptions;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::container::Launch;
use super::netns::Tools;
use super::procfs::{alive, pids_in_netns, proc_id};
use crate::sandbox::config::{Config, STATE_ROOT};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Node, Pod};
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::objects::Container;
use crate::sandbox::model::security;
use crate::sandbox::model::validate::parse_map_field;

/// How long pod processes, and every process at teardown, get between
/// SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);

/// The PATH every container gets, after the sandbox's own binaries.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Environment of a container: PATH (sandbox binaries first), HOME (the
/// container user's), HOSTNAME, then the container's `env` in order, with
/// `$(VAR)` references to earlier variables expanded and downward-API
/// fields filled in.
pub fn container_env(
    pod: &Pod,
    node: &Node,
    c: &Container,
    bin_dir: &Path,
    home: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            format!("{}:{SYSTEM_PATH}", bin_dir.display()),
        ),
        ("HOME".into(), home.into()),
        ("HOSTNAME".into(), pod.name.clone()),
    ];
    for var in &c.env {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => from
                .field_ref
                .as_ref()
                .map(|f| field_value(pod, node, &f.field_path))
                .unwrap_or_default(),
            (Some(v), None) => expand(v, &env),
            (None, None) => String::new(),
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    env
}

/// How container `index` of `pod` runs (its command, or for `meshctl
/// exec` any command in its context): environment, user and privileges
/// from its securityContext, the state folder hidden except the files in
/// `grant`.
pub fn container_launch(
    cfg: &Config,
    pod: &Pod,
    node: &Node,
    index: usize,
    grant: Vec<PathBuf>,
) -> Result<Launch> {
    let spec = pod.typed_spec();
    let c = spec.containers.get(index).ok_or_else(|| {
        SandboxError::Invalid(format!("pod {} has no container {index}", pod.key()))
    })?;
    let what = format!("container {} of pod {}", c.name, pod.key());
    let run_as = security::run_as(&spec, index, "spec", &security::host_primary_group)
        .map_err(|m| SandboxError::Invalid(format!("{what}: {m}")))?;
    let env = container_env(pod, node, c, &cfg.bin_dir, &security::home(run_as.uid));
    let argv = container_argv(c, &env);
    Ok(Launch {
        what,
        netns: pod.netns.clone(),
        hostname: pod.name.clone(),
        join: None,
        run_as,
        hide: vec![PathBuf::from(STATE_ROOT), cfg.state_dir.clone()],
        grant,
        argv,
        env,
    })
}

/// Downward-API value of `path` for `pod`.
pub fn field_value(pod: &Pod, node: &Node, path: &str) -> String {
    match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "status.podIP" | "status.podIPs" => pod.ip.to_string(),
        "status.hostIP" => node.ip.to_string(),
        "spec.nodeName" => node.name.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        _ => {
            let label = parse_map_field(path, "metadata.labels").and_then(|k| pod.labels.get(k));
            let annotation =
                parse_map_field(path, "metadata.annotations").and_then(|k| pod.annotations.get(k));
            label.or(annotation).cloned().unwrap_or_default()
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: known variables are replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The argv of a container, `$(VAR)`-expanded. Without a `command` the
/// `args` are run as the command: there are no images to supply an
/// entrypoint.
pub fn container_argv(c: &Container, env: &[(String, String)]) -> Vec<String> {
    c.command
        .iter()
        .chain(c.args.iter())
        .map(|a| expand(a, env))
        .collect()
}

/// Why pods, which run as unprivileged users, could not run the binaries in
/// `bin_dir` (the built-in apps, the waypoint): a folder on the way that
/// others cannot enter, or a `meshctl` there that others cannot execute.
/// `None` when they can.
pub fn unreachable_bin_dir(bin_dir: &Path) -> Option<String> {
    for dir in bin_dir.ancestors() {
        let mode = std::fs::metadata(dir).ok()?.mode();
        if mode & 0o001 == 0 {
            return Some(format!(
                "pods run as unprivileged users and cannot enter {} (mode {:o}): the built-in \
                 apps in {} will not start (chmod o+x, or point --bin-dir elsewhere)",
                dir.display(),
                mode & 0o7777,
                bin_dir.display()
            ));
        }
    }
    let meshctl = bin_dir.join("meshctl");
    let mode = std::fs::metadata(&meshctl).ok()?.mode();
    (mode & 0o005 != 0o005).then(|| {
        format!(
            "pods run as unprivileged users and cannot run {} (mode {:o}; chmod o+rx)",
            meshctl.display(),
            mode & 0o7777
        )
    })
}

/// Starts a container (see [`super::container`]) detached in its own
/// session, output appended to `log`.
pub fn spawn(launch: &Launch, log: &Path) -> Result<ProcId> {
    let ctx = || format!("starting {}", launch.what);
    let (out, err) = open_log(log).map_err(SandboxError::io(ctx()))?;
    let (mut cmd, description) = launch.command()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    new_session(&mut cmd);
    let child = cmd.spawn().map_err(SandboxError::io(ctx()))?;
    drop(description);
    let pid = child.id() as i32;
    // Dropping `child` neither waits nor kills: the process lives on.
    drop(child);
    Ok(proc_id(pid).unwrap_or(ProcId { pid, start: 0 }))
}

/// Opens `log` for appending (creating its folder), twice: stdout, stderr.
fn open_log(log: &Path) -> std::io::Result<(std::fs::File, std::fs::File)> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    Ok((out, err))
}

/// Starts `argv` inside the network namespace `netns`, detached in its own
/// session, output appended to `log`; `what` names it in errors. For the
/// system components, which run as root with every capability (pods go
/// through [`spawn`]).
pub fn spawn_in(
    tools: &Tools,
    netns: &str,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
    what: &str,
) -> Result<ProcId> {
    let ctx = || format!("starting {} in {what}", argv.join(" "));
    let (out, err) = open_log(log).map_err(SandboxError::io(ctx()))?;
    let mut cmd = Command::new(&tools.ip);
    // `ip netns exec` also bind-mounts /etc/netns/<ns>/{hosts,resolv.conf}
    // over /etc in a private mount namespace, then execs the program: the
    // PID we get is the program's.
    cmd.args(["netns", "exec", netns])
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // A new session detaches the process from meshctl's terminal so it
    // outlives the verb.
    new_session(&mut cmd);
    let child = cmd.spawn().map_err(SandboxError::io(ctx()))?;
    let pid = child.id() as i32;
    // Dropping `child` neither waits nor kills: the process lives on.
    drop(child);
    Ok(proc_id(pid).unwrap_or(ProcId { pid, start: 0 }))
}

/// Starts this `meshctl` binary, aimed at `cfg`'s sandbox, with `args` (a
/// hidden verb and its options), in a session of its own so signals to the
/// caller's terminal or process group do not reach it; output goes to
/// `<state>/logs/<log>`. `inherit` are descriptors the child keeps across
/// exec. Returns its identity.
pub fn spawn_self(cfg: &Config, args: &[String], log: &str, inherit: &[RawFd]) -> Result<ProcId> {
    let what = args.first().map(String::as_str).unwrap_or("meshctl");
    let exe = std::env::current_exe().map_err(SandboxError::io("locating meshctl"))?;
    let log_dir = cfg.state_dir.join("logs");
    std::fs::create_dir_all(&log_dir).map_err(SandboxError::io("creating logs folder"))?;
    let out = std::fs::File::create(log_dir.join(log))
        .map_err(SandboxError::io(format!("creating the {what} log")))?;
    let err = out
        .try_clone()
        .map_err(SandboxError::io(format!("creating the {what} log")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--sandbox")
        .arg(&cfg.name)
        .arg("--state-dir")
        .arg(&cfg.state_dir)
        .arg("--bin-dir")
        .arg(&cfg.bin_dir)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if !inherit.is_empty() {
        let fds = inherit.to_vec();
        // SAFETY: fcntl is async-signal-safe; the descriptors stay open in
        // the parent until the child has exec'd.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    new_session(&mut cmd);
    let child = cmd
        .spawn()
        .map_err(SandboxError::io(format!("starting meshctl {what}")))?;
    let pid = child.id() as i32;
    // Dropping `child` neither waits nor kills: the process lives on.
    drop(child);
    Ok(proc_id(pid).unwrap_or(ProcId { pid, start: 0 }))
}

/// The environment of a system process: PATH with the sandbox's binaries
/// first, HOME, backtraces on panic and no colour codes (both land in its
/// log file).
pub fn system_env(bin_dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "PATH".into(),
            format!("{}:{SYSTEM_PATH}", bin_dir.display()),
        ),
        ("HOME".into(), "/root".into()),
        ("RUST_BACKTRACE".into(), "1".into()),
        ("NO_COLOR".into(), "1".into()),
    ]
}

fn signal(p: ProcId, sig: i32) {
    if alive(p) {
        // SAFETY: plain kill(2); identity was checked just before.
        unsafe { libc::kill(p.pid, sig) };
    }
}

/// Stops every process in the namespaces `names` plus `extra`: SIGTERM,
/// up to `grace` to exit, then SIGKILL. Rescans so children forked while
/// stopping are caught too.
pub fn stop(names: &[String], extra: &[ProcId], grace: Duration) {
    let collect = || -> Vec<ProcId> {
        let mut v: Vec<ProcId> = pids_in_netns(names)
            .keys()
            .filter_map(|p| proc_id(*p))
            .collect();
        v.extend(extra.iter().copied().filter(|p| alive(*p)));
        v.retain(|p| p.pid != std::process::id() as i32);
        v
    };
    for (round, sig) in [libc::SIGTERM, libc::SIGKILL, libc::SIGKILL]
        .into_iter()
        .enumerate()
    {
        let procs = collect();
        if procs.is_empty() {
            return;
        }
        for p in &procs {
            signal(*p, sig);
        }
        let wait = if round == 0 {
            grace
        } else {
            Duration::from_secs(1)
        };
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && procs.iter().any(|p| alive(*p)) {
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Makes `cmd` start in a session of its own: it no longer belongs to the
/// caller's terminal or process group, so signals aimed at those (Ctrl-C, a
/// test runner killing its group) do not reach it.
pub(crate) fn new_session(cmd: &mut Command) {
    // SAFETY: setsid is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::cluster::Phase;
    use crate::sandbox::model::objects::{EnvVar, EnvVarSource, FieldRef};
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn pod() -> Pod {
        Pod {
            name: "orders-v1-abc".into(),
            namespace: "shop".into(),
            uid: "u-1".into(),
            node: "node2".into(),
            ip: Ipv4Addr::new(10, 244, 2, 3),
            netns: "ms-t.shop.orders-v1-abc".into(),
            veth: "veth3".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
            annotations: BTreeMap::new(),
            service_account: "orders".into(),
            owner: None,
            spec: serde_json::Value::Null,
            spec_hash: String::new(),
            containers: vec![],
            phase: Phase::Pending,
            ready: false,
            created: 0,
        }
    }

    fn node() -> Node {
        Node {
            name: "node2".into(),
            index: 2,
            ip: Ipv4Addr::new(172, 18, 0, 3),
            netns: "n".into(),
            next_host: 2,
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(FieldRef {
                    field_path: path.into(),
                }),
            }),
        }
    }

    #[test]
    fn env_has_path_hostname_fields_and_expansion() {
        let c = Container {
            name: "app".into(),
            env: vec![
                field("VERSION", "metadata.labels['version']"),
                field("POD_IP", "status.podIP"),
                field("NODE", "spec.nodeName"),
                field("SA", "spec.serviceAccountName"),
                EnvVar {
                    name: "URL".into(),
                    value: Some("http://$(POD_IP):80/$$(x)$(NOPE)".into()),
                    value_from: None,
                },
            ],
            command: vec!["meshctl".into(), "--v=$(VERSION)".into()],
            ..Default::default()
        };
        let env = container_env(&pod(), &node(), &c, Path::new("/opt/bin"), "/");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert!(get("PATH").unwrap().starts_with("/opt/bin:"));
        assert_eq!(get("HOSTNAME"), Some("orders-v1-abc"));
        assert_eq!(get("VERSION"), Some("v1"));
        assert_eq!(get("POD_IP"), Some("10.244.2.3"));
        assert_eq!(get("NODE"), Some("node2"));
        assert_eq!(get("SA"), Some("orders"));
        assert_eq!(get("URL"), Some("http://10.244.2.3:80/$(x)$(NOPE)"));
        assert_eq!(container_argv(&c, &env), vec!["meshctl", "--v=v1"]);
    }

    #[test]
    fn a_bin_dir_others_cannot_enter_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("meshctl-bin-{}", std::process::id()));
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("meshctl");
        std::fs::write(&exe, "").unwrap();
        let set = |p: &Path, mode| std::fs::set_permissions(p, PermissionsExt::from_mode(mode));
        set(&root, 0o755).unwrap();
        set(&exe, 0o755).unwrap();
        let open = unreachable_bin_dir(&bin);
        set(&exe, 0o700).unwrap();
        let private_exe = unreachable_bin_dir(&bin);
        set(&root, 0o700).unwrap();
        let private_dir = unreachable_bin_dir(&bin);
        let _ = std::fs::remove_dir_all(&root);
        // The temp folder itself may be private on this machine.
        if std::env::temp_dir()
            .ancestors()
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
        {
            assert_eq!(open, None);
            assert!(private_exe.is_some_and(|m| m.contains("chmod o+rx")));
        }
        assert!(private_dir.is_some_and(|m| m.contains("cannot enter")));
    }
}
