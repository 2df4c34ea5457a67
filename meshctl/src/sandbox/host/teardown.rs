//! Tearing sandboxes down: `down`, `down --all`, the reaper, and `up`
//! clearing sandboxes whose owner is gone.
//!
//! Teardown trusts the kernel over the state file: it finds namespaces by
//! prefix in /run/netns and processes by namespace in /proc, so a sandbox
//! whose `up` crashed half way is removed completely too.

use std::path::{Path, PathBuf};

use super::netns::{self, Tools};
use super::{dns, process, procfs, state};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::addresses::netns_prefix;
use crate::sandbox::model::cluster::Cluster;
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::settings::{STATE_ROOT, SandboxSettings};

/// The registry entry of a sandbox: its state folder, or a symlink to it
/// when `--state-dir` put it elsewhere (so `down --all` and stale-owner
/// reaping find every sandbox).
pub fn registry_entry(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// Removes everything of sandbox `name`. The caller holds its lock (or it
/// has no state folder any more).
pub fn destroy(tools: &Tools, name: &str, state_dir: &Path, cluster: Option<&Cluster>) {
    destroy_runtime(tools, name, cluster);
    let _ = std::fs::remove_dir_all(state_dir);
    let entry = registry_entry(name);
    if entry.is_symlink() {
        let _ = std::fs::remove_file(&entry);
    }
}

/// Stops the processes and removes the namespaces and `/etc/netns` folders
/// of sandbox `name`, keeping its state folder.
pub fn destroy_runtime(tools: &Tools, name: &str, cluster: Option<&Cluster>) {
    let prefix = netns_prefix(name);
    let mut names = netns::list_netns(&prefix);
    let mut procs: Vec<ProcId> = Vec::new();
    if let Some(c) = cluster {
        for n in c.all_netns() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        procs.extend(
            c.pods
                .values()
                .flat_map(|p| p.containers.iter().filter_map(|c| c.process)),
        );
        // System processes, and the port forwarder living in the host
        // namespace where no namespace scan finds it.
        procs.extend(c.control.iter().flat_map(|cp| cp.all_processes()));
        // The reaper watches from the host namespace; stop it unless it is us.
        procs.extend(c.reaper.filter(|r| r.pid != std::process::id() as i32));
    }
    process::stop(&names, &procs, process::GRACE);
    netns::delete_netns(tools, &names);
    let mut etc = dns::list(&prefix);
    etc.extend(names.iter().cloned());
    dns::remove(&etc);
}

/// `meshctl down`: tears the sandbox down. Returns false when there was
/// nothing to remove.
pub fn down(cfg: &SandboxSettings) -> Result<bool> {
    netns::require_root()?;
    let tools = Tools::find()?;
    match state::lock(&cfg.state_dir, &cfg.name, false) {
        Ok(_lock) => {
            let cluster = state::load(&cfg.state_dir, &cfg.name).ok();
            destroy(&tools, &cfg.name, &cfg.state_dir, cluster.as_ref());
            Ok(true)
        }
        Err(SandboxError::NotUp(_)) => {
            // No state: still clear leftovers of a crashed `up`.
            let prefix = netns_prefix(&cfg.name);
            let leftovers =
                !netns::list_netns(&prefix).is_empty() || !dns::list(&prefix).is_empty();
            if leftovers {
                destroy(&tools, &cfg.name, &cfg.state_dir, None);
            }
            Ok(leftovers)
        }
        Err(e) => Err(e),
    }
}

/// Names of every sandbox with anything left on this machine.
pub fn all_sandboxes() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        if !n.is_empty() && !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    };
    let from_ns = |ns: &str| {
        ns.strip_prefix("ms-")
            .and_then(|r| r.split_once('.'))
            .map(|(s, _)| s.to_string())
    };
    for ns in netns::list_netns("ms-")
        .iter()
        .chain(dns::list("ms-").iter())
    {
        if let Some(s) = from_ns(ns) {
            add(&s);
        }
    }
    if let Ok(dir) = std::fs::read_dir(STATE_ROOT) {
        for e in dir.flatten() {
            if let Some(n) = e.file_name().to_str() {
                add(n);
            }
        }
    }
    names.sort();
    names
}

/// State folder of a sandbox found through the registry.
pub fn state_dir_of(name: &str) -> PathBuf {
    let entry = registry_entry(name);
    std::fs::read_link(&entry).unwrap_or(entry)
}

/// `meshctl down --all`: every sandbox on the machine.
pub fn down_all(bin_dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for name in all_sandboxes() {
        if crate::sandbox::settings::validate_sandbox_name(&name).is_err() {
            continue;
        }
        let cfg = SandboxSettings::new(
            &name,
            Some(state_dir_of(&name)),
            Some(bin_dir.to_path_buf()),
        )?;
        if down(&cfg)? {
            done.push(name);
        }
    }
    Ok(done)
}

/// Tears down sandboxes whose owner process is gone (their reaper died
/// with them, e.g. on a reboot-less crash). Busy sandboxes are skipped.
pub fn reap_stale(tools: &Tools, except: &str) -> Vec<String> {
    let mut reaped = Vec::new();
    for name in all_sandboxes() {
        if name == except || crate::sandbox::settings::validate_sandbox_name(&name).is_err() {
            continue;
        }
        let dir = state_dir_of(&name);
        let Some(cluster) = state::peek(&dir) else {
            continue;
        };
        let Some(owner) = cluster.owner else { continue };
        if procfs::alive(owner) {
            continue;
        }
        // Only when nobody holds it: a live verb or reaper is dealing with it.
        if let Ok(_lock) = try_lock(&dir, &name) {
            destroy(tools, &name, &dir, Some(&cluster));
            reaped.push(name);
        }
    }
    reaped
}

fn try_lock(dir: &Path, name: &str) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(dir.join("lock")).map_err(SandboxError::io("opening lock"))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(file)
    } else {
        Err(SandboxError::Invalid(format!("sandbox {name} is busy")))
    }
}
