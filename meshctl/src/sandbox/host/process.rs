//! Starting and stopping processes: containers (through `meshctl
//! sandbox-container`), system components (through `ip netns exec`) and
//! meshctl's own helper processes, each detached in a session of its own;
//! stopping is SIGTERM, a grace period, then SIGKILL.

use std::fs::OpenOptions;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::container::Launch;
use super::netns::Tools;
use super::procfs::{alive, pids_in_netns, proc_id};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::settings::SandboxSettings;

/// How long pod processes, and every process at teardown, get between
/// SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(2);

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
pub fn spawn_self(
    cfg: &SandboxSettings,
    args: &[String],
    log: &str,
    inherit: &[RawFd],
) -> Result<ProcId> {
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
