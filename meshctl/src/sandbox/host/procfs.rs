//! What `/proc` says about processes: identity (PID and start time),
//! liveness, the ports a pod's namespace has bound, which processes live in
//! given network namespaces, and the command inside a container.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::netns::NETNS_RUN_DIR;
use crate::sandbox::model::cluster::Pod;
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::model::objects::Container;
use crate::sandbox::model::validate::protocol;

/// `/proc/PID/stat`: (state, start time). The command name may contain
/// spaces and parentheses, so fields are counted after the last ')'.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start time is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Identifies a running process.
pub fn proc_id(pid: i32) -> Option<ProcId> {
    proc_stat(pid).map(|(_, start)| ProcId { pid, start })
}

/// True while the process runs (zombies count as gone: they hold no
/// namespace and will never run again).
pub fn alive(p: ProcId) -> bool {
    matches!(proc_stat(p.pid), Some((state, start)) if start == p.start && state != 'Z' && state != 'X')
}

/// TCP and UDP ports the process's namespace listens on / has bound.
pub fn bound_ports(pid: i32) -> BTreeSet<(&'static str, u16)> {
    let mut ports = BTreeSet::new();
    for (file, proto, want_state) in [
        ("tcp", "tcp", Some("0A")),
        ("tcp6", "tcp", Some("0A")),
        ("udp", "udp", None),
        ("udp6", "udp", None),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            if want_state.is_some_and(|w| w != *state) {
                continue;
            }
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if let Some(port) = port {
                ports.insert((proto, port));
            }
        }
    }
    ports
}

/// Ready: every container process alive and every declared port bound.
pub fn ready(pod: &Pod, containers: &[Container]) -> bool {
    let procs: Vec<ProcId> = pod.containers.iter().filter_map(|c| c.process).collect();
    if !procs.iter().all(|p| alive(*p)) {
        return false;
    }
    let Some(first) = procs.first() else {
        return true;
    };
    let bound = bound_ports(first.pid);
    containers.iter().flat_map(|c| &c.ports).all(|p| {
        let proto = protocol(p.protocol.as_deref()).unwrap_or("tcp");
        bound.contains(&(proto, p.container_port))
    })
}

/// Inode identifying a network namespace.
fn netns_ino(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Processes whose network namespace is one of `names` (one scan of /proc).
pub fn pids_in_netns(names: &[String]) -> BTreeMap<i32, String> {
    let wanted: BTreeMap<(u64, u64), &String> = names
        .iter()
        .filter_map(|n| Some((netns_ino(&Path::new(NETNS_RUN_DIR).join(n))?, n)))
        .collect();
    let mut found = BTreeMap::new();
    if wanted.is_empty() {
        return found;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ns) = netns_ino(&entry.path().join("ns/net")).and_then(|i| wanted.get(&i)) {
            found.insert(pid, (*ns).clone());
        }
    }
    found
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
        .filter_map(proc_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_identified() {
        let me = proc_id(std::process::id() as i32).unwrap();
        assert!(alive(me));
        assert!(!alive(ProcId {
            pid: me.pid,
            start: me.start + 1
        }));
    }
}
