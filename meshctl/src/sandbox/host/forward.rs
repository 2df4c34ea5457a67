//! The host port forwarder (`meshctl sandbox-forward`, hidden): makes the
//! controller's admin and gRPC ports reachable from the host at
//! 127.0.0.1:<port> without adding anything to the host's network
//! namespace but a listening socket.
//!
//! `up` binds the host listeners itself (so port 0 resolves to a known free
//! port before anything starts) and hands them to the forwarder as
//! inherited file descriptors. For every accepted connection the forwarder
//! dials the target from inside the control-plane namespace (see
//! [`netns::connect_in`]) and copies bytes both ways.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::netns::{self, NETNS_RUN_DIR};
use super::process;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::ids::ProcId;
use crate::sandbox::settings::SandboxSettings;

/// Most connections forwarded at once; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long dialling the target may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the forwarder checks that its namespace still exists.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// One forwarded port: an inherited listening socket and the port it leads
/// to on 127.0.0.1 inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The listening socket's descriptor in the forwarder.
    pub fd: RawFd,
    /// Target port inside the namespace.
    pub port: u16,
}

impl std::str::FromStr for Forward {
    type Err = String;

    /// `FD=PORT`.
    fn from_str(s: &str) -> std::result::Result<Forward, String> {
        let (fd, port) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected FD=PORT"))?;
        Ok(Forward {
            fd: fd.parse().map_err(|_| format!("{s:?}: bad descriptor"))?,
            port: port.parse().map_err(|_| format!("{s:?}: bad port"))?,
        })
    }
}

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.fd, self.port)
    }
}

/// Binds 127.0.0.1:`port` on the host (0 picks a free port).
pub fn bind(port: u16, what: &str, flag: &str) -> Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            SandboxError::Invalid(format!(
                "cannot forward the controller's {what} port: 127.0.0.1:{port} is in use \
                 (another sandbox?); pass {flag} 0 to pick a free port"
            ))
        } else {
            SandboxError::io(format!("binding 127.0.0.1:{port}"))(e)
        }
    })
}

/// Starts the forwarder for `listeners` (each with its target port inside
/// `netns`), detached in its own session like the reaper; returns its
/// identity.
pub fn spawn(
    cfg: &SandboxSettings,
    netns: &str,
    listeners: &[(&TcpListener, u16)],
) -> Result<ProcId> {
    let mut args = vec![
        "sandbox-forward".to_string(),
        "--netns".into(),
        netns.into(),
    ];
    for (l, port) in listeners {
        let f = Forward {
            fd: l.as_raw_fd(),
            port: *port,
        };
        args.extend(["--forward".into(), f.to_string()]);
    }
    let fds: Vec<RawFd> = listeners.iter().map(|(l, _)| l.as_raw_fd()).collect();
    process::spawn_self(cfg, &args, "forwarder.log", &fds)
}

/// Takes ownership of an inherited listening socket, checking it is one.
fn adopt(fd: RawFd) -> Result<TcpListener> {
    // SAFETY: fstat into a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let is_socket =
        unsafe { libc::fstat(fd, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK;
    if fd < 3 || !is_socket {
        return Err(SandboxError::Invalid(format!(
            "--forward: descriptor {fd} is not an inherited socket"
        )));
    }
    // SAFETY: fd is an open socket handed to this process for it to own.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// The forwarder's main loop: runs until its namespace is gone (or it is
/// killed by teardown).
pub fn run(netns: &str, forwards: &[Forward]) -> Result<()> {
    let listeners: Vec<(TcpListener, u16)> = forwards
        .iter()
        .map(|f| adopt(f.fd).map(|l| (l, f.port)))
        .collect::<Result<_>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SandboxError::io("starting the forwarder runtime"))?;
    runtime.block_on(serve(netns.to_string(), listeners))
}

async fn serve(netns: String, listeners: Vec<(TcpListener, u16)>) -> Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    for (listener, port) in listeners {
        listener
            .set_nonblocking(true)
            .map_err(SandboxError::io("configuring a forwarded port"))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(SandboxError::io("configuring a forwarded port"))?;
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        say!("forwarding {local} to 127.0.0.1:{port} in {netns}");
        tokio::spawn(accept_loop(listener, netns.clone(), port, permits.clone()));
    }
    let handle = Path::new(NETNS_RUN_DIR).join(&netns);
    // The namespace going away means the sandbox is being torn down.
    while handle.exists() {
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
    say!("namespace {netns} is gone: stopping");
    Ok(())
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    netns: String,
    port: u16,
    permits: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                eprintln!("accept on a forwarded port failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            eprintln!("{peer}: {MAX_CONNECTIONS} connections already forwarded; closing");
            continue;
        };
        let netns = netns.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let dialled = tokio::task::spawn_blocking(move || {
                netns::connect_in(&netns, target, DIAL_TIMEOUT)
            })
            .await;
            let upstream = match dialled {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    eprintln!("{peer}: connecting to port {port} in the sandbox: {e}");
                    return;
                }
                Err(e) => {
                    eprintln!("{peer}: dial task failed: {e}");
                    return;
                }
            };
            let upstream = match upstream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(upstream))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{peer}: {e}");
                    return;
                }
            };
            let (mut a, mut b) = (client, upstream);
            // Either side closing (or failing) ends the forwarded connection.
            let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::netns::TestNetns;

    #[test]
    fn forward_specs_round_trip() {
        let f: Forward = "7=15014".parse().unwrap();
        assert_eq!(f, Forward { fd: 7, port: 15014 });
        assert_eq!(f.to_string(), "7=15014");
        assert!("7".parse::<Forward>().is_err());
        assert!("x=1".parse::<Forward>().is_err());
        assert!("3=70000".parse::<Forward>().is_err());
    }

    /// Binds 127.0.0.1:0 inside `netns`.
    fn listen_in(netns: &str) -> TcpListener {
        netns::in_netns(netns, || TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).unwrap()
    }

    #[test]
    fn host_connections_reach_a_port_inside_the_namespace() {
        use std::io::{Read, Write};
        let Some(ns) = TestNetns::if_root("meshctl-ut-fwd") else {
            return;
        };
        let inner = listen_in(ns.name());
        let port = inner.local_addr().unwrap().port();
        // Nothing listens on that port in the host namespace.
        let direct = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        assert!(
            direct.is_err(),
            "the port must exist only inside the namespace"
        );
        let echo = std::thread::spawn(move || {
            let (mut s, _) = inner.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let host = bind(0, "test", "--test-port").unwrap();
        let host_port = host.local_addr().unwrap().port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(serve(ns.name().to_owned(), vec![(host, port)]));
        let mut client = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, host_port)).unwrap();
        client.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        client.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        echo.join().unwrap();
        runtime.shutdown_background();
    }

    #[test]
    fn only_inherited_sockets_are_adopted() {
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(adopt(file.as_raw_fd()).is_err());
        assert!(adopt(0).is_err());
    }
}
