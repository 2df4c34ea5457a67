//! Containers: a pod's processes (its containers' commands, and `meshctl
//! exec` into it, which runs in the container's context as `kubectl exec`
//! does) started confined as on a node.
//!
//! meshctl describes what to run in a [`Launch`], hands it to the hidden
//! verb `meshctl sandbox-container` through an anonymous file (so nothing of
//! it, environment included, reaches a command line or the environment of a
//! root process), and that verb, still root:
//!
//! 1. joins the pod's network namespace and unshares mount, PID, IPC and UTS
//!    namespaces (hostname: the pod's name), or, for `exec`, joins those of
//!    the running container;
//! 2. builds the container's filesystem view ([`mounts`]): the host's
//!    filesystem read-only, fresh `/dev`, `/run`, `/tmp`, `/sys`, the pod's
//!    hosts and resolv.conf, the sandbox's state folder hidden, and only the
//!    files granted to the pod copied in;
//! 3. forks the container's PID 1, a minimal init that mounts `/proc`,
//!    forks the command, drops its own privileges, passes signals on and
//!    reaps orphans ([`supervise`]);
//! 4. the command drops to its user, groups and capabilities ([`creds`])
//!    and execs.
//!
//! The verb itself stays outside, waiting, so the process meshctl records
//! lives exactly as long as the container and passes on the signals meshctl
//! sends it.

mod creds;
mod mounts;
mod supervise;

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::security::RunAs;

/// Exit status of `sandbox-container` when the container could not be set
/// up (126 and 127 keep their shell meanings: not executable, not found).
const SETUP_FAILED: i32 = 125;

/// Everything `meshctl sandbox-container` needs to start one process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Names it in messages: `container app of pod shop/orders-…`.
    pub what: String,
    /// The pod's network namespace.
    pub netns: String,
    /// The pod's name, the container's hostname.
    pub hostname: String,
    /// Run inside this running container's namespaces (exec) instead of
    /// new ones.
    pub join: Option<ProcId>,
    /// User, groups and capabilities.
    pub run_as: RunAs,
    /// Folders to hide behind an empty filesystem (the state folder).
    pub hide: Vec<PathBuf>,
    /// Files of hidden folders the container may read, copied in at the
    /// same path, owned by its user, mode 0400.
    pub grant: Vec<PathBuf>,
    /// The command line.
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// The `meshctl sandbox-container` command running this launch, with an
    /// empty environment and `/` as working folder. The returned descriptor
    /// holds the description and must stay open until the command has been
    /// spawned.
    pub fn command(&self) -> Result<(Command, OwnedFd)> {
        let ctx = || format!("starting {}", self.what);
        let exe = std::env::current_exe().map_err(SandboxError::io("locating meshctl"))?;
        let json = serde_json::to_vec(self)
            .map_err(|e| SandboxError::Invalid(format!("{}: {e}", ctx())))?;
        let fd = nix::sys::memfd::memfd_create(
            c"meshctl-container",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| SandboxError::io(ctx())(e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&json).map_err(SandboxError::io(ctx()))?;
        file.rewind().map_err(SandboxError::io(ctx()))?;
        let fd = OwnedFd::from(file);
        let raw = fd.as_raw_fd();
        let mut cmd = Command::new(exe);
        cmd.arg("sandbox-container")
            .arg("--spec-fd")
            .arg(raw.to_string())
            .arg("--for")
            .arg(&self.what)
            .env_clear()
            .current_dir("/");
        // SAFETY: fcntl is async-signal-safe; `fd` stays open in the parent
        // until the child has exec'd (the caller holds it).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Ok((cmd, fd))
    }
}

/// The hidden verb: reads the launch from descriptor `spec_fd`, runs it and
/// returns the container's exit status (125 when it could not be set up,
/// with the reason on stderr, which is the container's log).
pub fn run(spec_fd: RawFd) -> i32 {
    let launch = match read_launch(spec_fd) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("meshctl sandbox-container: {e}");
            return SETUP_FAILED;
        }
    };
    match supervise::run(&launch) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshctl: {}: {e}", launch.what);
            SETUP_FAILED
        }
    }
}

fn read_launch(fd: RawFd) -> Result<Launch> {
    let ctx = format!("reading the container description from descriptor {fd}");
    if fd < 3 {
        return Err(SandboxError::Invalid(format!(
            "{ctx}: not an inherited descriptor"
        )));
    }
    // SAFETY: the descriptor was opened for this process by its parent
    // (`Launch::command`) and nothing else owns it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(SandboxError::io(ctx.clone()))?;
    serde_json::from_str(&text).map_err(|e| SandboxError::Invalid(format!("{ctx}: {e}")))
}

/// The host PID of the command a container runs, given the process the
/// sandbox records for it: that is `meshctl sandbox-container`, whose child
/// is the container's init, whose first child is the command. `None` once
/// the command has exited. For tools that measure the command itself.
pub fn command_pid(recorded: i32) -> Option<i32> {
    let init = first_child(recorded)?;
    first_child(init)
}

/// The earliest-started child of `pid` (one scan of /proc).
fn first_child(pid: i32) -> Option<i32> {
    let dir = std::fs::read_dir("/proc").ok()?;
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| parent(*child) == Some(pid))
        .filter_map(super::process::proc_id)
        .min_by_key(|p| p.start)
        .map(|p| p.pid)
}

/// The parent of `pid`, from `/proc/PID/stat` (fields counted after the
/// command name, which may hold spaces and parentheses).
fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Maps a failed system call to the sandbox's error, saying what was done.
fn sys(context: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> SandboxError {
    let context = context.to_string();
    move |errno| SandboxError::Io {
        context,
        source: errno.into(),
    }
}
