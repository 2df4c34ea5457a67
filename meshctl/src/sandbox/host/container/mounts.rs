//! The filesystem a container sees, built in its own mount namespace.
//!
//! The sandbox has no images: a container's "image" is the host's
//! filesystem, seen read-only. Over it go what a container runtime gives
//! every container: a fresh `/dev` with only the harmless devices, a fresh
//! `/proc` for the container's PID namespace (kernel knobs read-only), a
//! `/sys` for its network namespace (read-only), and empty writable `/run`
//! and `/tmp` of its own. The sandbox's state folder (tokens, the CA's
//! keys, logs, state.json), `/run/netns` and anything else under `/run` are
//! thereby out of sight; only the files granted to the pod are copied back
//! in. The pod's hosts and resolv.conf are bound over `/etc` as `ip netns
//! exec` does.
//!
//! The sandbox's binaries stay in sight even when they live under `/tmp`.
//!
//! Every writable mount is nosuid and nodev; `/dev` is read-only once
//! filled, so a root container cannot create device nodes anywhere.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::{Mode, SFlag, mknod};
use nix::unistd::{Gid, Uid, chown};

use super::launch::Launch;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::dns::etc_dir;

/// Writable scratch filesystems: nothing on them is a device or setuid.
const SCRATCH: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
/// `MOUNT_ATTR_RDONLY` of mount_setattr(2).
const MOUNT_ATTR_RDONLY: u64 = 1;

/// Character devices every container gets: (name, major, minor).
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Kernel interfaces under /proc no container may write.
const PROC_READ_ONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];
/// Kernel interfaces under /proc no container may read.
const PROC_MASKED: [&str; 4] = ["kcore", "keys", "timer_list", "sched_debug"];

/// A file granted to the container, read before its folder is hidden.
struct Grant {
    path: PathBuf,
    content: Vec<u8>,
}

/// Unshares the mount namespace and builds the container's view (see the
/// module doc). Runs as root, in the pod's network namespace.
pub(super) fn isolate(launch: &Launch) -> Result<()> {
    // Read through the host's view first: the pod's /etc files, where they
    // land (following symlinks, e.g. /etc/resolv.conf into /run), and the
    // granted files.
    let binds = etc_binds(&launch.netns)?;
    let mut grants = Vec::new();
    for path in &launch.grant {
        let content =
            fs::read(path).map_err(SandboxError::io(format!("reading {}", path.display())))?;
        grants.push(Grant {
            path: path.clone(),
            content,
        });
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(SandboxError::sys("creating a mount namespace"))?;
    // Slave: mounts made here stay here, while the host's unmounts (of
    // namespace handles, say) still reach this copy.
    remount(
        "/",
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        "making mounts private",
    )?;
    read_only_tree()?;
    fresh_sys()?;
    fresh_dev()?;
    // Detached first so this namespace holds no other pod's netns handle.
    let _ = umount2("/run/netns", MntFlags::MNT_DETACH);
    tmpfs("/run", SCRATCH | MsFlags::MS_NOEXEC, "mode=755,size=16m")?;
    let kept = stage_kept(&launch.keep)?;
    tmpfs("/tmp", SCRATCH, "mode=1777")?;
    if fs::symlink_metadata("/var/tmp").is_ok_and(|m| m.is_dir()) {
        tmpfs("/var/tmp", SCRATCH, "mode=1777")?;
    }
    restore_kept(&kept)?;
    // Whatever of the state folder is still in sight (one outside /run).
    let hidden: Vec<&PathBuf> = launch
        .hide
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .collect();
    for dir in &hidden {
        tmpfs(dir, SCRATCH | MsFlags::MS_NOEXEC, "mode=755")?;
    }
    for (source, target) in &binds {
        bind_read_only(source, target)?;
    }
    for grant in &grants {
        write_grant(grant, launch.run_as.uid, launch.run_as.gid)?;
    }
    for dir in hidden {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | SCRATCH | MsFlags::MS_NOEXEC;
        mount(None::<&str>, dir, None::<&str>, flags, None::<&str>).map_err(SandboxError::sys(
            format!("making {} read-only", dir.display()),
        ))?;
    }
    Ok(())
}

/// Where folders to keep wait while `/tmp` is replaced (inside the fresh `/run`).
const STAGING: &str = "/run/.sandbox-keep";

/// Binds each folder of `keep` that a fresh `/tmp` or `/var/tmp` will cover (a checkout
/// under `/tmp`) to a staging folder first; returns (folder, staging) pairs.
fn stage_kept(keep: &[PathBuf]) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut kept = Vec::new();
    for (n, path) in keep.iter().filter(|p| under_scratch(p)).enumerate() {
        let staging = Path::new(STAGING).join(n.to_string());
        fs::create_dir_all(&staging)
            .map_err(SandboxError::io(format!("creating {}", staging.display())))?;
        mount(
            Some(path.as_path()),
            &staging,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(SandboxError::sys(format!("staging {}", path.display())))?;
        kept.push((path.clone(), staging));
    }
    Ok(kept)
}

/// Binds the staged folders back at their own paths, read-only, and drops the staging.
fn restore_kept(kept: &[(PathBuf, PathBuf)]) -> Result<()> {
    for (path, staging) in kept {
        fs::create_dir_all(path)
            .map_err(SandboxError::io(format!("creating {}", path.display())))?;
        bind_read_only(staging, path)?;
        umount2(staging, MntFlags::MNT_DETACH)
            .map_err(SandboxError::sys(format!("unstaging {}", path.display())))?;
    }
    if !kept.is_empty() {
        let _ = fs::remove_dir_all(STAGING);
    }
    Ok(())
}

/// Whether `path` lies on a filesystem the container gets fresh.
fn under_scratch(path: &Path) -> bool {
    path.starts_with("/tmp") || path.starts_with("/var/tmp")
}

/// Mounts a fresh `/proc` for the caller's PID namespace (the container's
/// init calls this), kernel knobs read-only and kernel internals masked.
pub(super) fn fresh_proc() -> Result<()> {
    let _ = umount2("/proc", MntFlags::MNT_DETACH);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
        .map_err(SandboxError::sys("mounting /proc"))?;
    for name in PROC_READ_ONLY {
        let path = Path::new("/proc").join(name);
        if path.exists() {
            bind_read_only(&path, &path)?;
        }
    }
    for name in PROC_MASKED {
        let path = Path::new("/proc").join(name);
        if path.exists() {
            bind_read_only(Path::new("/dev/null"), &path)?;
        }
    }
    Ok(())
}

/// `(source, target)` for each of the pod's files under /etc/netns, the
/// target resolved through symlinks on the host.
fn etc_binds(netns: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    let dir = etc_dir(netns);
    let entries =
        fs::read_dir(&dir).map_err(SandboxError::io(format!("reading {}", dir.display())))?;
    let mut binds = Vec::new();
    for entry in entries.flatten() {
        let target = Path::new("/etc").join(entry.file_name());
        let target = fs::canonicalize(&target).unwrap_or(target);
        binds.push((entry.path(), target));
    }
    binds.sort();
    Ok(binds)
}

fn remount(target: &str, flags: MsFlags, what: &str) -> Result<()> {
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(SandboxError::sys(what))
}

fn tmpfs(target: impl AsRef<Path>, flags: MsFlags, options: &str) -> Result<()> {
    let target = target.as_ref();
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options)).map_err(SandboxError::sys(
        format!("mounting a tmpfs on {}", target.display()),
    ))
}

/// Binds `source` over `target` (creating `target` in a scratch filesystem
/// when it does not exist there), read-only.
fn bind_read_only(source: &Path, target: &Path) -> Result<()> {
    let ctx = format!("binding {} over {}", source.display(), target.display());
    if fs::symlink_metadata(target).is_err() {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(SandboxError::io(ctx.clone()))?;
        }
        fs::write(target, b"").map_err(SandboxError::io(ctx.clone()))?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(SandboxError::sys(&ctx))?;
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(SandboxError::sys(ctx))
}

/// Makes every mount of this namespace read-only.
fn read_only_tree() -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) on "/" with a valid, correctly sized
    // mount_attr that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        // Before Linux 5.12: one mount at a time.
        nix::errno::Errno::ENOSYS => read_only_each(),
        e => Err(SandboxError::sys("making the host's filesystem read-only")(
            e,
        )),
    }
}

/// [`read_only_tree`] for kernels without mount_setattr: remounts each
/// mount point read-only, keeping its nosuid/nodev/noexec.
fn read_only_each() -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(SandboxError::io("reading /proc/self/mountinfo"))?;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(options)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let point = unescape(point);
        let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        for (option, flag) in [
            ("nosuid", MsFlags::MS_NOSUID),
            ("nodev", MsFlags::MS_NODEV),
            ("noexec", MsFlags::MS_NOEXEC),
        ] {
            if options.split(',').any(|o| o == option) {
                flags |= flag;
            }
        }
        // Mounts the kernel will not remount (gone meanwhile) are skipped.
        let _ = mount(
            None::<&str>,
            point.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        );
    }
    Ok(())
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A sysfs of the pod's network namespace (as `ip netns exec` mounts),
/// read-only.
fn fresh_sys() -> Result<()> {
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("sysfs"), "/sys", Some("sysfs"), flags, None::<&str>)
        .map_err(SandboxError::sys("mounting /sys"))
}

/// A `/dev` holding only [`DEVICES`], the usual links and a private
/// `/dev/shm`, then made read-only.
fn fresh_dev() -> Result<()> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // Detached rather than covered: nothing of the host's /dev stays
    // reachable in this namespace.
    let _ = umount2("/dev", MntFlags::MNT_DETACH);
    tmpfs("/dev", flags, "mode=755,size=64k")?;
    for (name, major, minor) in DEVICES {
        let path = Path::new("/dev").join(name);
        let mode = Mode::from_bits_truncate(0o666);
        mknod(
            &path,
            SFlag::S_IFCHR,
            mode,
            libc::makedev(major as u32, minor as u32),
        )
        .map_err(SandboxError::sys(format!("creating {}", path.display())))?;
        // mknod honours the umask; devices are for everyone.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))
            .map_err(SandboxError::io(format!("opening up {}", path.display())))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, Path::new("/dev").join(link))
            .map_err(SandboxError::io(format!("linking /dev/{link}")))?;
    }
    fs::create_dir("/dev/shm").map_err(SandboxError::io("creating /dev/shm"))?;
    tmpfs("/dev/shm", SCRATCH | MsFlags::MS_NOEXEC, "mode=1777")?;
    remount(
        "/dev",
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags,
        "making /dev read-only",
    )
}

/// Writes a granted file at its own path, readable by the container's user
/// only.
fn write_grant(grant: &Grant, uid: u32, gid: u32) -> Result<()> {
    let ctx = || format!("granting {}", grant.path.display());
    if let Some(parent) = grant.path.parent() {
        fs::create_dir_all(parent).map_err(SandboxError::io(ctx()))?;
    }
    fs::write(&grant.path, &grant.content).map_err(SandboxError::io(ctx()))?;
    chown(
        &grant.path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )
    .map_err(SandboxError::sys(ctx()))?;
    fs::set_permissions(&grant.path, fs::Permissions::from_mode(0o400))
        .map_err(SandboxError::io(ctx()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04");
    }
}
