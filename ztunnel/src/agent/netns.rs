//! Finding and opening a pod's network namespace, and running commands inside one.
//!
//! Two ways to find a pod's namespace:
//!
//! - [`NetnsSource::Dir`] (the sandbox): the file `<dir>/<namespace>.<pod name>` is the pod's
//!   network namespace (a bind mount or a symlink to one, such as `/run/netns/<name>`). The
//!   pod is named by namespace and name because that is what the controller's workloads
//!   carry; the Kubernetes pod UID never reaches the agent. Namespace names cannot contain a
//!   dot, so the name is unambiguous.
//! - [`NetnsSource::Proc`] (Kubernetes): every process's network namespace is visited once
//!   (`/proc/<pid>/ns/net`, deduplicated by inode) and its local addresses are read from
//!   `/proc/<pid>/net/fib_trie` and `/proc/<pid>/net/if_inet6`, without entering it; the
//!   namespace holding a pod's IP is the pod's. The host's namespace (pid 1's) and the agent's
//!   own are skipped, so host-network pods are never captured.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::pod::NodePod;
pub use crate::proxy::netns::NsId;

/// Why a namespace could not be found, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Opening or inspecting a namespace file failed.
    #[error("network namespace {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// The file is a namespace of another kind, or no namespace at all.
    #[error("{0} is not a network namespace")]
    NotNetns(String),
    /// Scanning `/proc` failed.
    #[error("scanning {path}: {source}")]
    Scan {
        /// The proc folder.
        path: String,
        /// Cause.
        source: io::Error,
    },
    /// A command could not be started inside the namespace.
    #[error("running {program} in the pod network namespace: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Cause.
        source: io::Error,
    },
    /// A command ran past its deadline and was killed.
    #[error("{program} did not finish within {seconds} s")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        seconds: u64,
    },
}

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: u64 = 0xb703;

/// How long one command inside a pod's namespace may take. Generous: an `iptables` that waits
/// for the xtables lock can be slow, but must not wedge the agent forever.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// The most output kept from one command; the rule listings we read are a few KiB.
const MAX_COMMAND_OUTPUT: u64 = 1024 * 1024;

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    id: NsId,
}

impl Netns {
    /// Opens `path`, which must be a network namespace (a nsfs file or a link to one).
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let fd = OwnedFd::from(file);
        // SAFETY: the ioctl only reads the namespace type of a descriptor we own.
        let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns(path.display().to_string()));
        }
        let id = NsId::of(&fd).map_err(|source| NetnsError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Netns { fd, id })
    }

    /// The namespace's identity.
    pub fn id(&self) -> NsId {
        self.id
    }

    /// The open descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Gives up the descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// The file name a pod's namespace has in a [`NetnsSource::Dir`] folder.
pub fn dir_entry_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}")
}

/// Where pods' network namespaces are found.
#[derive(Clone, Debug)]
pub enum NetnsSource {
    /// `<dir>/<namespace>.<pod name>` is the pod's namespace.
    Dir(PathBuf),
    /// Scan this proc folder (normally `/proc`, the host's: the agent runs with `hostPID`).
    Proc(PathBuf),
}

impl NetnsSource {
    /// The source for `netns_dir` as configured: the folder when set, `/proc` otherwise.
    pub fn from_config(netns_dir: Option<&Path>) -> NetnsSource {
        match netns_dir {
            Some(dir) => NetnsSource::Dir(dir.to_path_buf()),
            None => NetnsSource::Proc(PathBuf::from("/proc")),
        }
    }

    /// Finds the namespaces of `pods` (blocking: reads the file system). Pods whose
    /// namespace is not found are missing from the answer; the error is for a scan that
    /// could not run at all.
    pub fn find(&self, pods: &[&NodePod]) -> Result<BTreeMap<String, Netns>, NetnsError> {
        match self {
            NetnsSource::Dir(dir) => {
                let mut found = BTreeMap::new();
                for pod in pods {
                    let path = dir.join(dir_entry_name(&pod.namespace, &pod.name));
                    match Netns::open(&path) {
                        Ok(ns) => {
                            found.insert(pod.uid.clone(), ns);
                        }
                        Err(NetnsError::Open { source, .. })
                            if source.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(pod = %pod.uid, "{e}"),
                    }
                }
                Ok(found)
            }
            NetnsSource::Proc(root) => {
                let mut wanted = HashMap::new();
                for pod in pods {
                    for ip in &pod.addresses {
                        wanted.insert(*ip, pod.uid.clone());
                    }
                }
                scan_proc(root, &wanted).map_err(|source| NetnsError::Scan {
                    path: root.display().to_string(),
                    source,
                })
            }
        }
    }

    /// Identity of the namespace currently at a pod's place, when it can be learnt cheaply
    /// (a `stat` in a [`NetnsSource::Dir`]); `None` otherwise. A changed identity means the
    /// pod was replaced by another of the same name.
    pub fn current_id(&self, pod: &NodePod) -> Option<NsId> {
        match self {
            NetnsSource::Dir(dir) => {
                let meta =
                    std::fs::metadata(dir.join(dir_entry_name(&pod.namespace, &pod.name))).ok()?;
                Some(NsId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                })
            }
            NetnsSource::Proc(_) => None,
        }
    }
}

/// Visits each network namespace under `root` once and opens those holding a wanted address.
fn scan_proc(root: &Path, wanted: &HashMap<IpAddr, String>) -> io::Result<BTreeMap<String, Netns>> {
    let mut found: BTreeMap<String, Netns> = BTreeMap::new();
    if wanted.is_empty() {
        return Ok(found);
    }
    let want_v4 = wanted.keys().any(IpAddr::is_ipv4);
    let want_v6 = wanted.keys().any(IpAddr::is_ipv6);
    // The host's namespace (pid 1 sees the host with hostPID) and our own are never a pod's.
    let mut seen: HashSet<u64> = HashSet::new();
    for skip in [root.join("1/ns/net"), PathBuf::from("/proc/self/ns/net")] {
        if let Ok(meta) = std::fs::metadata(&skip) {
            seen.insert(meta.ino());
        }
    }
    let wanted_uids: HashSet<&String> = wanted.values().collect();
    for entry in std::fs::read_dir(root)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let ns_path = root.join(pid).join("ns/net");
        // Processes come and go during the scan: any failure just skips this one.
        let Ok(meta) = std::fs::metadata(&ns_path) else {
            continue;
        };
        if !seen.insert(meta.ino()) {
            continue;
        }
        let mut local: Vec<IpAddr> = Vec::new();
        if want_v4 && let Ok(text) = read_bounded(&root.join(pid).join("net/fib_trie")) {
            local.extend(parse_fib_trie_local(&text).into_iter().map(IpAddr::V4));
        }
        if want_v6 && let Ok(text) = read_bounded(&root.join(pid).join("net/if_inet6")) {
            local.extend(parse_if_inet6(&text).into_iter().map(IpAddr::V6));
        }
        let Some(uid) = local.iter().find_map(|ip| wanted.get(ip)) else {
            continue;
        };
        if found.contains_key(uid) {
            continue;
        }
        match Netns::open(&ns_path) {
            // The pid may have been reused since the stat: keep the namespace only if it is
            // the one whose addresses were read.
            Ok(ns) if ns.id().ino == meta.ino() => {
                found.insert(uid.clone(), ns);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("skipping {}: {e}", ns_path.display()),
        }
        if found.len() == wanted_uids.len() {
            break;
        }
    }
    Ok(found)
}

/// Reads a small proc file, refusing anything implausibly large.
fn read_bounded(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    File::open(path)?
        .take(MAX_COMMAND_OUTPUT)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The IPv4 addresses a namespace's `fib_trie` lists as local host addresses (`/32 host
/// LOCAL` leaves).
pub fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("|-- ") {
            leaf = rest.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = leaf
            && !ip.is_loopback()
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// The IPv6 addresses in a namespace's `if_inet6` (32 hex digits per line), loopback and
/// link-local excluded.
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        if hex.len() != 32 {
            continue;
        }
        let ip = Ipv6Addr::from(bits);
        let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
        if !ip.is_loopback() && !link_local && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The per-namespace switch that lets the kernel move connections queued on a closing
/// SO_REUSEPORT listener to another listener of its group (Linux 5.14+).
const TCP_MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// Whether the namespace's `net.ipv4.tcp_migrate_req` is now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMigration {
    /// On: a draining proxy's queued connections go to its successor's listener.
    Enabled,
    /// The kernel has no such switch (before 5.14): a closing listener resets its queue.
    Unsupported,
}

/// Sets `net.ipv4.tcp_migrate_req=1` inside `netns`, so that when an old proxy closes its
/// listeners during an overlapping upgrade, connections the kernel had queued on them (fully
/// established or still in the handshake) move to the new proxy's listener instead of being
/// reset. `/proc/sys/net` shows the namespace of the thread that opens it, so the write is made
/// by a short-lived thread that enters the namespace and ends there.
pub async fn enable_request_migration(
    netns: BorrowedFd<'_>,
) -> Result<RequestMigration, NetnsError> {
    let fd = netns
        .try_clone_to_owned()
        .map_err(|source| NetnsError::Open {
            path: TCP_MIGRATE_REQ.into(),
            source,
        })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-sysctl".into())
        .spawn(move || {
            let _ = tx.send(write_in(&fd, TCP_MIGRATE_REQ, "1"));
        })
        .map_err(|source| NetnsError::Open {
            path: TCP_MIGRATE_REQ.into(),
            source,
        })?;
    let written = rx
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the sysctl thread ended early")));
    match written {
        Ok(()) => Ok(RequestMigration::Enabled),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RequestMigration::Unsupported),
        Err(source) => Err(NetnsError::Open {
            path: TCP_MIGRATE_REQ.into(),
            source,
        }),
    }
}

/// Enters `netns` on the calling thread (never switched back: the thread must end after) and
/// writes `value` to the sysctl file `path`.
fn write_in(netns: &OwnedFd, path: &str, value: &str) -> io::Result<()> {
    use std::os::fd::AsFd;
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(io::Error::from)?;
    std::fs::write(path, value)
}

/// What a command run in a namespace produced.
#[derive(Debug)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// Standard output (bounded).
    pub stdout: String,
    /// Standard error (bounded).
    pub stderr: String,
}

/// Runs `program args…` with its network namespace switched to `netns` (its mount and PID
/// namespaces stay the agent's, so the agent's own binaries are used), feeding `stdin`.
pub async fn run_in_netns(
    netns: BorrowedFd<'_>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<CommandOutput, NetnsError> {
    let spawn_error = |source| NetnsError::Spawn {
        program: program.to_string(),
        source,
    };
    // An owned duplicate travels to the blocking thread; it is CLOEXEC like the original.
    let fd = netns.try_clone_to_owned().map_err(spawn_error)?;
    let job = Job {
        program: program.to_string(),
        args: args.iter().map(|a| a.to_string()).collect(),
        stdin: stdin.map(str::to_owned),
    };
    match tokio::task::spawn_blocking(move || job.run(fd)).await {
        Ok(result) => result,
        Err(join) => Err(spawn_error(io::Error::other(join))),
    }
}

/// One command to run in a namespace, on a blocking thread.
struct Job {
    program: String,
    args: Vec<String>,
    stdin: Option<String>,
}

impl Job {
    fn run(self, netns: OwnedFd) -> Result<CommandOutput, NetnsError> {
        use std::os::unix::process::CommandExt;
        let spawn_error = |source| NetnsError::Spawn {
            program: self.program.clone(),
            source,
        };
        let raw = netns.as_raw_fd();
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the child only makes the async-signal-safe setns
        // call. The descriptor is open in the child (CLOEXEC closes it only at exec) and
        // `netns` outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(spawn_error)?;
        drop(netns);
        let writer = match (child.stdin.take(), self.stdin) {
            (Some(mut pipe), Some(text)) => Some(std::thread::spawn(move || {
                use std::io::Write;
                // A command that exits early closes its end: nothing more to feed.
                let _ = pipe.write_all(text.as_bytes());
            })),
            _ => None,
        };
        let out = child
            .stdout
            .take()
            .map(|p| std::thread::spawn(move || read_pipe(p)));
        let err = child
            .stderr
            .take()
            .map(|p| std::thread::spawn(move || read_pipe(p)));

        // Poll for exit so a wedged command can be killed while we still own (and have not
        // reaped) it; the pause grows so quick commands cost little.
        let deadline = std::time::Instant::now() + COMMAND_DEADLINE;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait().map_err(spawn_error)? {
                Some(status) => break status,
                None if std::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NetnsError::Timeout {
                        program: self.program.clone(),
                        seconds: COMMAND_DEADLINE.as_secs(),
                    });
                }
                None => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let collect = |t: Option<std::thread::JoinHandle<String>>| {
            t.map(|t| t.join().unwrap_or_default()).unwrap_or_default()
        };
        Ok(CommandOutput {
            success: status.success(),
            code: status.code(),
            stdout: collect(out),
            stderr: collect(err),
        })
    }
}

/// Reads a pipe to its end, keeping at most [`MAX_COMMAND_OUTPUT`] bytes; the rest is
/// drained so the child never blocks on a full pipe.
fn read_pipe(pipe: impl io::Read) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut limited = pipe.take(MAX_COMMAND_OUTPUT);
    let _ = limited.read_to_end(&mut buf);
    let _ = io::copy(&mut limited.into_inner(), &mut io::sink());
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.244.1.0/24 2 0 2
        |-- 10.244.1.7
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.244.1.7
        /32 host LOCAL
     |-- 10.244.1.255
        /32 link BROADCAST
";

    #[test]
    fn fib_trie_yields_local_host_addresses_only() {
        assert_eq!(
            parse_fib_trie_local(FIB_TRIE),
            vec![Ipv4Addr::new(10, 244, 1, 7)]
        );
    }

    #[test]
    fn if_inet6_yields_global_addresses_only() {
        let text = "\
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
";
        assert_eq!(
            parse_if_inet6(text),
            vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]
        );
    }

    #[test]
    fn dir_entries_are_namespace_dot_name() {
        assert_eq!(
            dir_entry_name("shop", "web-7d9f-abcde"),
            "shop.web-7d9f-abcde"
        );
    }

    #[test]
    fn open_refuses_files_that_are_not_network_namespaces() {
        assert!(matches!(
            Netns::open(Path::new("/proc/self/ns/uts")),
            Err(NetnsError::NotNetns(_))
        ));
        assert!(matches!(
            Netns::open(Path::new("/proc/self/status")),
            Err(NetnsError::NotNetns(_))
        ));
        let ns = Netns::open(Path::new("/proc/self/ns/net")).unwrap();
        let meta = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(ns.id().ino, meta.ino());
    }

    #[tokio::test]
    async fn commands_run_inside_the_given_namespace() {
        // A fresh namespace from a helper thread: nothing to clean up once the fd closes.
        let fd = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            Netns::open(Path::new("/proc/thread-self/ns/net")).unwrap()
        })
        .join()
        .unwrap();
        let out = run_in_netns(fd.fd(), "readlink", &["/proc/self/ns/net"], None)
            .await
            .unwrap();
        assert!(out.success, "{out:?}");
        assert_eq!(out.stdout.trim(), format!("net:[{}]", fd.id().ino));

        let out = run_in_netns(fd.fd(), "cat", &[], Some("fed through stdin"))
            .await
            .unwrap();
        assert_eq!(out.stdout, "fed through stdin");
    }

    #[tokio::test]
    async fn request_migration_is_turned_on_in_the_given_namespace_only() {
        let fd = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            Netns::open(Path::new("/proc/thread-self/ns/net")).unwrap()
        })
        .join()
        .unwrap();
        let own = std::fs::read_to_string(TCP_MIGRATE_REQ).ok();
        let outcome = enable_request_migration(fd.fd()).await.unwrap();
        if own.is_none() {
            // A kernel before 5.14: said so, not an error.
            assert_eq!(outcome, RequestMigration::Unsupported);
            return;
        }
        assert_eq!(outcome, RequestMigration::Enabled);
        let inside = run_in_netns(fd.fd(), "cat", &[TCP_MIGRATE_REQ], None)
            .await
            .unwrap();
        assert_eq!(inside.stdout.trim(), "1", "{inside:?}");
        assert_eq!(
            std::fs::read_to_string(TCP_MIGRATE_REQ).ok(),
            own,
            "the agent's own namespace is left alone"
        );
    }

    /// What the switch is for: connections queued on a listener that closes are accepted by
    /// the other listener of its SO_REUSEPORT group, none reset.
    #[tokio::test]
    async fn queued_connections_of_a_closing_listener_reach_its_successor() {
        use socket2::{Domain, Socket, Type};
        const CLIENTS: usize = 24;
        let fd = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            Netns::open(Path::new("/proc/thread-self/ns/net")).unwrap()
        })
        .join()
        .unwrap();
        if enable_request_migration(fd.fd()).await.unwrap() == RequestMigration::Unsupported {
            return;
        }
        let up = run_in_netns(fd.fd(), "ip", &["link", "set", "lo", "up"], None)
            .await
            .unwrap();
        assert!(up.success, "{up:?}");
        let raw = fd.fd().try_clone_to_owned().unwrap();
        let (old, new, clients) = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            nix::sched::setns(raw.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let listener = |port: u16| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                s.set_reuse_port(true).unwrap();
                s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
                    .unwrap();
                s.listen(CLIENTS as i32).unwrap();
                std::net::TcpListener::from(s)
            };
            let old = listener(0);
            let port = old.local_addr().unwrap().port();
            let new = listener(port);
            // Never accepted by the old listener: they wait in its (or the new one's) queue.
            let clients: Vec<std::net::TcpStream> = (0..CLIENTS)
                .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
                .collect();
            (old, new, clients)
        })
        .join()
        .unwrap();
        drop(old);
        new.set_nonblocking(true).unwrap();
        let mut accepted = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while accepted < CLIENTS && std::time::Instant::now() < deadline {
            match new.accept() {
                Ok(_) => accepted += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
        assert_eq!(
            accepted, CLIENTS,
            "every queued connection moved to the successor"
        );
        drop(clients);
    }
}
