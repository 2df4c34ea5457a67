//! Network plumbing through `ip`: namespaces, the fabric bridge, node and pod
//! links, routes. Commands are batched per namespace (`ip -n NS -batch -`)
//! to keep process spawns low.
//!
//! Pods attach to their node with a routed veth pair (as Calico or the `ptp`
//! CNI plugin do) rather than a bridge: every packet between two pods, even on
//! the same node, then crosses the node's IP layer, so the node's conntrack
//! sees both directions of a DNATed Service connection and no `br_netfilter`
//! (a host-wide kernel module) is needed.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::addresses::NODE_CIDR_PREFIX;
use crate::sandbox::model::cluster::{Cluster, Node, Pod};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// External programs the sandbox uses, resolved once.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `ip` (iproute2).
    pub ip: PathBuf,
    /// `iptables-restore` (iptables).
    pub iptables_restore: PathBuf,
}

impl Tools {
    /// Finds the tools, naming the package to install when one is missing.
    pub fn find() -> Result<Tools> {
        let ip = which("ip").ok_or(SandboxError::MissingTool {
            tool: "ip",
            package: "iproute2",
        })?;
        let iptables_restore = which("iptables-restore").ok_or(SandboxError::MissingTool {
            tool: "iptables-restore",
            package: "iptables",
        })?;
        Ok(Tools {
            ip,
            iptables_restore,
        })
    }
}

/// Fails unless running as root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(SandboxError::NotRoot)
    }
}

/// Looks `name` up in PATH and the sbin folders (often missing from a
/// non-root PATH).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a command, feeding `stdin`, and fails with its stderr unless it
/// exits 0.
pub fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let line = {
        let mut s = cmd.get_program().to_string_lossy().into_owned();
        for a in cmd.get_args() {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    };
    let describe = || line.clone();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(SandboxError::io(format!("running {}", describe())))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the command's own error below.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(SandboxError::io(format!("running {}", describe())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if let Some(input) = stdin {
            stderr = format!("{stderr}\ninput was:\n{input}");
        }
        if stderr.is_empty() {
            stderr = out.status.to_string();
        }
        Err(SandboxError::Command {
            command: describe(),
            stderr,
        })
    }
}

/// Runs `ip [-n NETNS] [-force] -batch -` with `lines`.
pub fn ip_batch(tools: &Tools, netns: Option<&str>, lines: &[String], force: bool) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(&tools.ip);
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]);
    run(&mut cmd, Some(&(lines.join("\n") + "\n"))).map(|_| ())
}

/// Namespace names under /run/netns starting with `prefix`.
pub fn list_netns(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Runs `work` on a short-lived thread that has joined the network
/// namespace `netns`: sockets it creates belong to that namespace and
/// `/proc/sys/net` shows that namespace's settings. The caller's threads
/// never change namespace, and the helper thread ends with `work`.
pub fn in_netns<T: Send>(
    netns: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let handle = std::fs::File::open(Path::new(NETNS_RUN_DIR).join(netns))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a valid namespace fd affects only this thread.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            work()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
    })
}

/// Writes a sysctl inside a namespace.
pub fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    sysctls(netns, &[(key, value)])
}

/// Writes sysctls inside a namespace (one thread joins it for all).
pub fn sysctls(netns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let mut failed = None;
    in_netns(netns, || {
        for (key, value) in settings {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            if let Err(e) = std::fs::write(&path, value) {
                failed = Some(format!("{key}={value}"));
                return Err(e);
            }
        }
        Ok(())
    })
    .map_err(|e| {
        let what = failed.unwrap_or_else(|| "sysctls".into());
        SandboxError::io(format!("setting {what} in namespace {netns}"))(e)
    })
}

/// What every pod namespace gets, as containerd 2 and Docker set them:
/// unprivileged processes may bind ports below 1024 and open ICMP echo
/// sockets (`ping`), so neither needs a capability.
const POD_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// Creates the fabric namespace with its bridge and the node namespaces
/// joined to it, with routes to every other node's pod CIDR.
pub fn create_nodes(tools: &Tools, cluster: &Cluster, nodes: &[Node]) -> Result<()> {
    let mut adds = vec![format!("netns add {}", cluster.fabric_netns)];
    adds.extend(nodes.iter().map(|n| format!("netns add {}", n.netns)));
    ip_batch(tools, None, &adds, false)?;
    let mut fabric = vec![
        "link set lo up".to_string(),
        "link add br0 type bridge".to_string(),
        "link set br0 up".to_string(),
    ];
    for n in nodes {
        // The veth is created inside the fabric with its peer moved straight
        // into the node: it never exists in the host namespace.
        fabric.push(format!(
            "link add {} type veth peer name eth0 netns {}",
            n.name, n.netns
        ));
        fabric.push(format!("link set {} master br0", n.name));
        fabric.push(format!("link set {} up", n.name));
    }
    ip_batch(tools, Some(&cluster.fabric_netns), &fabric, false)?;
    for n in nodes {
        let mut lines = vec![
            "link set lo up".to_string(),
            "link set eth0 up".to_string(),
            format!("addr add {}/{NODE_CIDR_PREFIX} dev eth0", n.ip),
        ];
        for other in nodes.iter().filter(|o| o.name != n.name) {
            lines.push(format!(
                "route add {} via {} dev eth0",
                other.pod_cidr(),
                other.ip
            ));
        }
        ip_batch(tools, Some(&n.netns), &lines, false)?;
        sysctl(&n.netns, "net.ipv4.ip_forward", "1")?;
    }
    Ok(())
}

/// Creates the control-plane namespace on the fabric bridge at `ip`, with
/// routes to every node's pod CIDR through that node, so nodes and pods
/// reach it and it answers them.
pub fn create_control(tools: &Tools, cluster: &Cluster, netns: &str, ip: Ipv4Addr) -> Result<()> {
    ip_batch(tools, None, &[format!("netns add {netns}")], false)?;
    let fabric = vec![
        format!("link add control type veth peer name eth0 netns {netns}"),
        "link set control master br0".to_string(),
        "link set control up".to_string(),
    ];
    ip_batch(tools, Some(&cluster.fabric_netns), &fabric, false)?;
    let mut lines = vec![
        "link set lo up".to_string(),
        "link set eth0 up".to_string(),
        format!("addr add {ip}/{NODE_CIDR_PREFIX} dev eth0"),
    ];
    for n in &cluster.nodes {
        lines.push(format!("route add {} via {} dev eth0", n.pod_cidr(), n.ip));
    }
    ip_batch(tools, Some(netns), &lines, false)
}

/// Connects to `addr` from inside the network namespace `netns` (a socket
/// belongs to the namespace it was created in).
pub fn connect_in(netns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    in_netns(netns, || TcpStream::connect_timeout(&addr, timeout))
}

/// Creates the namespaces and links of new pods: one `ip` call for the
/// namespaces, one per node, one per pod.
pub fn create_pods(tools: &Tools, cluster: &Cluster, pods: &[&Pod]) -> Result<()> {
    let adds: Vec<String> = pods
        .iter()
        .map(|p| format!("netns add {}", p.netns))
        .collect();
    ip_batch(tools, None, &adds, false)?;
    for node in &cluster.nodes {
        let mut lines = Vec::new();
        for p in pods.iter().filter(|p| p.node == node.name) {
            lines.push(format!(
                "link add {} type veth peer name eth0 netns {}",
                p.veth, p.netns
            ));
            lines.push(format!("addr add {}/32 dev {}", node.gateway(), p.veth));
            lines.push(format!("link set {} up", p.veth));
            lines.push(format!("route add {}/32 dev {}", p.ip, p.veth));
        }
        ip_batch(tools, Some(&node.netns), &lines, false)?;
    }
    for p in pods {
        let gw = cluster.node(&p.node).map(|n| n.gateway()).ok_or_else(|| {
            SandboxError::Invalid(format!("pod {} is on unknown node {}", p.key(), p.node))
        })?;
        let lines = vec![
            "link set lo up".to_string(),
            "link set eth0 up".to_string(),
            format!("addr add {}/32 dev eth0", p.ip),
            format!("route add {gw} dev eth0 scope link"),
            format!("route add default via {gw} dev eth0"),
        ];
        ip_batch(tools, Some(&p.netns), &lines, false)?;
        sysctls(&p.netns, &POD_SYSCTLS)?;
    }
    Ok(())
}

/// Removes pods' links and namespaces (their processes must be gone).
/// Best effort: a half-created pod has some of these missing.
pub fn delete_pods(tools: &Tools, cluster: &Cluster, pods: &[&Pod]) {
    for node in &cluster.nodes {
        // Deleting the node end removes the pair at once, so a new pod may
        // reuse the name even while the old namespace is still being freed.
        let lines: Vec<String> = pods
            .iter()
            .filter(|p| p.node == node.name)
            .map(|p| format!("link del {}", p.veth))
            .collect();
        let _ = ip_batch(tools, Some(&node.netns), &lines, true);
    }
    let names: Vec<String> = pods.iter().map(|p| p.netns.clone()).collect();
    delete_netns(tools, &names);
}

/// Deletes namespaces, ignoring ones already gone.
pub fn delete_netns(tools: &Tools, names: &[String]) {
    let lines: Vec<String> = names
        .iter()
        .filter(|n| Path::new(NETNS_RUN_DIR).join(n).exists())
        .map(|n| format!("netns del {n}"))
        .collect();
    let _ = ip_batch(tools, None, &lines, true);
}

#[cfg(test)]
mod tests {
    use test_support::netns::TestNetns;

    use super::*;

    #[test]
    fn connect_in_reaches_only_the_namespace_loopback() {
        let Some(ns) = TestNetns::if_root("meshctl-ut-connect") else {
            return;
        };
        // Nothing listens inside the new namespace: refused there, even
        // though the host may well listen on the same port.
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = host.local_addr().unwrap();
        let err = connect_in(ns.name(), addr, Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(connect_in("meshctl-ut-no-such-netns", addr, Duration::from_secs(1)).is_err());
        // The calling thread stayed in its own namespace.
        assert!(TcpStream::connect(addr).is_ok());
    }
}
