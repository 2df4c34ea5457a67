//! What runs in a container, as meshctl hands it to `meshctl
//! sandbox-container`: a [`Launch`], built from a pod's container (its
//! environment, its user and privileges from the securityContext and the
//! host's user database, the state folder hidden) and passed through an
//! anonymous file so nothing of it reaches a command line or a root
//! process's environment. Also whether pods can run the sandbox's binaries
//! at all.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Node, Pod};
use crate::sandbox::model::env::{container_argv, container_env};
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::security::{self, RunAs};
use crate::sandbox::settings::{STATE_ROOT, SandboxSettings};

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
    /// Folders to keep in sight, read-only, even where the container gets
    /// a fresh filesystem (`/tmp`): the sandbox's binaries, which pods run.
    pub keep: Vec<PathBuf>,
    /// The command line.
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// How container `index` of `pod` runs (its command, or for `meshctl
    /// exec` any command in its context): environment, user and privileges
    /// from its securityContext, the state folder hidden except the files in
    /// `grant`.
    pub fn for_container(
        cfg: &SandboxSettings,
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
        let run_as = security::run_as(&spec, index, "spec", &host_primary_group)
            .map_err(|m| SandboxError::Invalid(format!("{what}: {m}")))?;
        let env = container_env(pod, node, c, &cfg.bin_dir, &home(run_as.uid));
        let argv = container_argv(c, &env);
        Ok(Launch {
            what,
            netns: pod.netns.clone(),
            hostname: pod.name.clone(),
            join: None,
            run_as,
            hide: vec![PathBuf::from(STATE_ROOT), cfg.state_dir.clone()],
            keep: vec![cfg.bin_dir.clone()],
            grant,
            argv,
            env,
        })
    }

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

/// The host's primary group of `uid`, from the user database.
pub fn host_primary_group(uid: u32) -> Option<u32> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
}

/// The home folder of `uid`: its entry in the user database, else `/`
/// (what container runtimes do).
pub fn home(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bin_dir_others_cannot_enter_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let root = test_support::TempDir::new("meshctl-bin");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("meshctl");
        std::fs::write(&exe, "").unwrap();
        let set = |p: &Path, mode| std::fs::set_permissions(p, PermissionsExt::from_mode(mode));
        set(root.path(), 0o755).unwrap();
        set(&exe, 0o755).unwrap();
        let open = unreachable_bin_dir(&bin);
        set(&exe, 0o700).unwrap();
        let private_exe = unreachable_bin_dir(&bin);
        set(root.path(), 0o700).unwrap();
        let private_dir = unreachable_bin_dir(&bin);
        drop(root);
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
