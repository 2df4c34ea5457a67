//! What runs in a container, as meshctl hands it to `meshctl
//! sandbox-container`: a [`Launch`], passed through an anonymous file so
//! nothing of it reaches a command line or a root process's environment.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::security::RunAs;

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

/// Reads, in the verb, the launch [`Launch::command`] handed over in
/// descriptor `fd`.
pub(super) fn read_launch(fd: RawFd) -> Result<Launch> {
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
