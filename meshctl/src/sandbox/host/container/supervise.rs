//! The process tree of a container and who waits for whom:
//!
//! ```text
//! sandbox-container   root, outside: the PID meshctl records; passes
//!  │                  signals to its child, exits with its status
//!  └─ init            PID 1 of the container: mounts /proc, then runs as
//!      │              the container's user with no capabilities; passes
//!      │              signals on, reaps orphans, exits with the command's
//!      └─ command     status; its death takes the namespace's processes
//! ```
//!
//! A command is never PID 1 itself: PID 1 ignores signals it has no
//! handler for, so `sleep` would outlive SIGTERM. For `exec` the command
//! joins the running container's namespaces and is the supervisor's child
//! directly (the container's init adopts whatever it leaves behind).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::launch::Launch;
use super::{creds, mounts};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::netns::NETNS_RUN_DIR;
use crate::sandbox::host::procfs::proc_id;
use crate::sandbox::model::security::RunAs;

/// Exit status of `sandbox-container` when the container could not be set
/// up (126 and 127 keep their shell meanings: not executable, not found).
pub(super) const SETUP_FAILED: i32 = 125;

/// Signals passed on to the container.
const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Kubernetes' limit on a hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;

/// Sets the container up, starts it and waits; its exit status.
pub(super) fn run(launch: &Launch) -> Result<i32> {
    let mut watched = SigSet::empty();
    for s in FORWARDED {
        watched.add(s);
    }
    watched.add(Signal::SIGCHLD);
    seal_descriptors()?;
    // Blocked before anything starts, so no signal is lost or acted on
    // by default in between; each process below waits for them instead.
    watched
        .thread_block()
        .map_err(SandboxError::sys("blocking signals"))?;
    match launch.join {
        Some(_) => join(launch)?,
        None => isolate(launch)?,
    }
    // SAFETY: this process is single-threaded (a fresh exec of meshctl
    // that started no thread).
    match unsafe { fork() }.map_err(SandboxError::sys("starting the container"))? {
        ForkResult::Parent { child } => relay(child, &watched),
        ForkResult::Child => {
            let outcome = match launch.join {
                Some(_) => exec_command(launch),
                None => init(launch, &watched),
            };
            let code = outcome.unwrap_or_else(|e| {
                eprintln!("meshctl: {}: {e}", launch.what);
                SETUP_FAILED
            });
            std::process::exit(code)
        }
    }
}

/// Marks every descriptor beyond stdio close-on-exec: whatever meshctl's
/// caller left open (without close-on-exec) must not reach the container.
fn seal_descriptors() -> Result<()> {
    let entries =
        std::fs::read_dir("/proc/self/fd").map_err(SandboxError::io("listing open descriptors"))?;
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; one that was the listing's
        // own (closed meanwhile) just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// New namespaces: the pod's network, own mounts, PIDs, IPC and hostname.
fn isolate(launch: &Launch) -> Result<()> {
    let handle = Path::new(NETNS_RUN_DIR).join(&launch.netns);
    let netns = std::fs::File::open(&handle)
        .map_err(SandboxError::io(format!("opening {}", handle.display())))?;
    setns(&netns, CloneFlags::CLONE_NEWNET).map_err(SandboxError::sys(format!(
        "joining network namespace {}",
        launch.netns
    )))?;
    mounts::isolate(launch)?;
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(SandboxError::sys("creating PID, IPC and UTS namespaces"))?;
    let name: String = launch.hostname.chars().take(MAX_HOSTNAME).collect();
    let name = name.trim_end_matches(['-', '.']);
    // SAFETY: sethostname with a pointer and length of a live buffer.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        return Err(SandboxError::sys(format!("setting hostname {name}"))(
            Errno::last(),
        ));
    }
    Ok(())
}

/// The running container's namespaces (`exec`). The namespace handles
/// are opened, then the process is checked to still be the container's,
/// so a recycled PID is never joined.
fn join(launch: &Launch) -> Result<()> {
    let Some(target) = launch.join else {
        return Ok(());
    };
    let pid = target.pid;
    let kinds = [
        ("net", CloneFlags::CLONE_NEWNET),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid_for_children", CloneFlags::CLONE_NEWPID),
        // Last: it changes what paths mean.
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    let mut handles: Vec<(OwnedFd, CloneFlags, &str)> = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{pid}/ns/{name}");
        let file = std::fs::File::open(&path).map_err(SandboxError::io(format!(
            "opening {path}: the container is not running"
        )))?;
        handles.push((file.into(), flag, name));
    }
    if proc_id(pid) != Some(target) {
        return Err(SandboxError::Invalid("the container is not running".into()));
    }
    for (fd, flag, name) in handles {
        setns(&fd, flag).map_err(SandboxError::sys(format!(
            "joining the container's {name} namespace"
        )))?;
    }
    Ok(())
}

/// Waits for `child`, passing on every watched signal; its exit status
/// (128 + signal number when a signal ended it, as shells report).
fn relay(child: Pid, watched: &SigSet) -> Result<i32> {
    loop {
        let signal = watched
            .wait()
            .map_err(SandboxError::sys("waiting for signals"))?;
        if signal != Signal::SIGCHLD {
            let _ = kill(child, signal);
            continue;
        }
        if let Some(code) = reap(child)? {
            return Ok(code);
        }
    }
}

/// Reaps every exited child; `Some(status)` once `main` is among them.
fn reap(main: Pid) -> Result<Option<i32>> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => found = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => found = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(found),
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(e) => return Err(SandboxError::sys("waiting for the container")(e)),
        }
    }
}

/// PID 1 of the container: mounts /proc, starts the command, gives up its
/// privileges, then passes signals on and reaps until the command exits.
fn init(launch: &Launch, watched: &SigSet) -> Result<i32> {
    mounts::fresh_proc()?;
    // SAFETY: single-threaded, as in `run`.
    let command = match unsafe { fork() }.map_err(SandboxError::sys("starting the command"))? {
        ForkResult::Child => {
            let code = exec_command(launch).unwrap_or_else(|e| {
                eprintln!("meshctl: {}: {e}", launch.what);
                SETUP_FAILED
            });
            std::process::exit(code)
        }
        ForkResult::Parent { child } => child,
    };
    creds::become_user(&RunAs::powerless(launch.run_as.uid, launch.run_as.gid))?;
    // After the uid change, which clears it: die with the supervisor.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(SandboxError::sys("watching the supervisor"))?;
    relay(command, watched)
}

/// Becomes the container's user and execs its command; returns only on
/// failure, with 126 (not executable) or 127 (not found).
fn exec_command(launch: &Launch) -> Result<i32> {
    // Rust ignores SIGPIPE; a command expects the default. Nothing stays
    // blocked either.
    // SAFETY: restoring a default disposition installs no handler.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl) }
        .map_err(SandboxError::sys("resetting SIGPIPE"))?;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(SandboxError::sys("unblocking signals"))?;
    creds::become_user(&launch.run_as)?;
    let Some(program) = launch.argv.first() else {
        return Err(SandboxError::Invalid("no command to run".into()));
    };
    let cstr = |s: &str| {
        CString::new(s).map_err(|_| SandboxError::Invalid(format!("{s:?} contains a NUL byte")))
    };
    let argv = launch
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>>>()?;
    let env = launch
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    let path = launch
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/bin:/bin");
    let candidates: Vec<String> = if program.contains('/') {
        vec![program.clone()]
    } else {
        path.split(':')
            .map(|dir| format!("{}/{program}", if dir.is_empty() { "." } else { dir }))
            .collect()
    };
    let mut denied = None;
    for candidate in candidates {
        let Err(e) = nix::unistd::execve(&cstr(&candidate)?, &argv, &env);
        match e {
            Errno::ENOENT | Errno::ENOTDIR => {}
            Errno::EACCES => denied = Some(candidate),
            other => {
                eprintln!("meshctl: {}: exec {candidate:?}: {other}", launch.what);
                return Ok(126);
            }
        }
    }
    match denied {
        Some(candidate) => {
            eprintln!(
                "meshctl: {}: exec {candidate:?}: permission denied",
                launch.what
            );
            Ok(126)
        }
        None => {
            eprintln!(
                "meshctl: {}: exec: {program:?}: executable file not found in $PATH",
                launch.what
            );
            Ok(127)
        }
    }
}
