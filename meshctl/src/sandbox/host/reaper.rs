//! Owner watch: `up --owner-pid PID` starts a small detached process
//! (`meshctl sandbox-reaper`) that tears the sandbox down once PID is gone,
//! so a killed test or a crashed script leaves nothing behind.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{process, procfs, state, teardown};
use crate::sandbox::error::Result;
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::settings::SandboxSettings;

/// How often the reaper re-checks when it cannot wait on a pidfd.
const POLL: Duration = Duration::from_millis(500);

/// Starts the reaper for `owner` in a session of its own, so whatever kills
/// the owner's process group does not take the reaper with it; returns its
/// identity.
pub fn spawn(cfg: &SandboxSettings, owner: ProcId) -> Result<ProcId> {
    let args = [
        "sandbox-reaper".to_string(),
        "--owner-pid".into(),
        owner.pid.to_string(),
        "--owner-start".into(),
        owner.start.to_string(),
    ];
    process::spawn_self(cfg, &args, "reaper.log", &[])
}

/// A pidfd for `pid`, when the kernel supports them (5.3+).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned by pidfd_open and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout` for the pidfd to report the process's exit.
fn wait_exit(fd: &OwnedFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
}

/// The reaper's main loop: returns once the sandbox is gone, tearing it
/// down itself if the owner dies first.
pub fn run(cfg: &SandboxSettings, owner: ProcId) -> Result<()> {
    let me = std::process::id() as i32;
    // Opened before the liveness check so a recycled PID cannot slip in.
    let fd = pidfd(owner.pid);
    loop {
        if !procfs::alive(owner) {
            say!(
                "owner process {} is gone: tearing sandbox {} down",
                owner.pid,
                cfg.name
            );
            teardown::down(cfg)?;
            return Ok(());
        }
        if !cfg.state_dir.exists() {
            return Ok(()); // torn down by `meshctl down`
        }
        // Another reaper took over (the sandbox was recreated).
        if let Some(c) = state::peek(&cfg.state_dir)
            && c.reaper.is_some_and(|r| r.pid != me)
        {
            return Ok(());
        }
        // Wake at least every POLL to notice a `down` by someone else.
        match &fd {
            Some(fd) => wait_exit(fd, POLL),
            None => std::thread::sleep(POLL),
        }
    }
}
