//! Dropping to a container's user, groups and capabilities.
//!
//! The order matters: groups and the bounding set need root's
//! capabilities, `PR_SET_KEEPCAPS` keeps the permitted set across the uid
//! change, then the sets are cut to what the container holds. A non-root
//! process keeps them across exec only as ambient capabilities; root gets
//! its bounding set back at exec, which is why the bounding set is cut to
//! exactly what root should hold.

use nix::unistd::{Gid, Uid};

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::security::{CapSet, RunAs};

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets this process's effective, permitted and inheritable sets to `caps`.
fn capset(caps: CapSet) -> Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let word = |shift: u32| {
        let w = (caps.0 >> shift) as u32;
        CapData {
            effective: w,
            permitted: w,
            inheritable: w,
        }
    };
    let data = [word(0), word(32)];
    // SAFETY: capset(2) with a version-3 header and two data words, as the
    // kernel expects; both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(SandboxError::sys("setting capabilities")(
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Removes from the bounding set every capability not in `keep`.
fn cut_bounding(keep: CapSet) -> Result<()> {
    for cap in 0..64u32 {
        if keep.contains(cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let errno = nix::errno::Errno::last();
            // EINVAL: past the kernel's last capability.
            if errno == nix::errno::Errno::EINVAL {
                break;
            }
            return Err(SandboxError::sys(format!(
                "dropping capability {cap} from the bounding set"
            ))(errno));
        }
    }
    Ok(())
}

/// Raises `caps` in the ambient set, so a non-root process keeps them
/// across exec.
fn raise_ambient(caps: CapSet) -> Result<()> {
    for cap in caps.numbers() {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(SandboxError::sys(format!(
                "raising ambient capability {cap}"
            ))(nix::errno::Errno::last()));
        }
    }
    Ok(())
}

/// Becomes `run_as`: groups, gid, uid, capabilities, no_new_privs. Must run
/// as root with all capabilities, single-threaded.
pub(super) fn become_user(run_as: &RunAs) -> Result<()> {
    let groups: Vec<Gid> = run_as.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(SandboxError::sys("setting supplementary groups"))?;
    cut_bounding(run_as.bounding)?;
    nix::sys::prctl::set_keepcaps(true).map_err(SandboxError::sys("keeping capabilities"))?;
    let gid = Gid::from_raw(run_as.gid);
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(SandboxError::sys(format!("setting gid {}", run_as.gid)))?;
    let uid = Uid::from_raw(run_as.uid);
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(SandboxError::sys(format!("setting uid {}", run_as.uid)))?;
    capset(run_as.caps)?;
    if run_as.uid != 0 {
        raise_ambient(run_as.caps)?;
    }
    nix::sys::prctl::set_keepcaps(false)
        .map_err(SandboxError::sys("resetting keep-capabilities"))?;
    if run_as.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(SandboxError::sys("setting no_new_privs"))?;
    }
    Ok(())
}
