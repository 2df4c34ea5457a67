//! ZDS as the node proxy receives it: the input is a series of packets (see
//! [`frames`](crate::framing::frames); flags bit 0 attaches a descriptor, bit 1 picks which, bit 2
//! attaches a second one) that a fake node agent sends over a real unix SEQPACKET socket to
//! ztunnel's `InpodClient`, which decodes, validates and applies each one to its registry
//! of pods (with a launcher that starts nothing).
//!
//! Oracle: the proxy says hello first, then answers every packet with exactly one `Ack`, or
//! closes the connection; it never goes silent.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use api::zds::{WorkloadResponse, ZdsHello, workload_response};
use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use prost::Message;
use proxy_core::readiness::Readiness;
use tokio::sync::watch;
use ztunnel::inpod::{InpodClient, InpodSettings, Launcher, PodInfo};
use ztunnel::proxy::PodNetns;

use crate::framing::frames;
use crate::mutate::Shape;
use crate::target::Target;

/// ZDS packets from the node agent.
pub const REQUESTS: Target = Target {
    name: "zds_requests",
    run: zds_requests,
    shape: Shape::Bytes,
    dictionary: &[
        b"\x01\x00\x00",
        b"\x00\x00\x02\x1a\x00",
        b"\x00\x00\x02\x12\x00",
        b"\x00\x00\x02\x2a\x00",
        b"\x0a\x24",
        b"fail",
    ],
    max_len: 8 * 1024,
};

/// How long the proxy may take to answer one packet.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Packets sent per input, at most.
const MAX_PACKETS: usize = 64;

/// A launcher that starts nothing; a pod named `fail` fails to start.
struct Idle;

impl Launcher for Idle {
    type Proxy = ();

    async fn start(&self, pod: &PodInfo, _netns: Arc<PodNetns>) -> Result<(), String> {
        if pod.name == "fail" {
            Err("refused by the fuzz launcher".into())
        } else {
            Ok(())
        }
    }

    async fn drain(&self, _pod: &PodInfo, _proxy: (), _deadline: Duration) {}

    fn active_connections(&self, _proxy: &()) -> usize {
        0
    }
}

/// A folder of its own for the socket, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fuzz-zds-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a temporary folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listen(path: &Path) -> OwnedFd {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("a SEQPACKET socket");
    let addr = UnixAddr::new(path).expect("a socket path");
    socket::bind(fd.as_raw_fd(), &addr).expect("bind");
    socket::listen(&fd, Backlog::new(4).expect("a backlog")).expect("listen");
    fd
}

/// Waits for `fd` to be readable; false on timeout. A signal (libFuzzer's timer) does not
/// end the wait.
fn readable(fd: &OwnedFd) -> bool {
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pollfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut pollfd, 1, millis) };
        if n > 0 {
            return true;
        }
        let interrupted = n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR;
        if !interrupted || left.is_zero() {
            return false;
        }
    }
}

/// Runs a system call again while a signal interrupts it.
fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) => continue,
            result => return result,
        }
    }
}

/// One packet from the proxy; `None` when it closed the connection.
fn receive(fd: &OwnedFd) -> Option<Vec<u8>> {
    assert!(readable(fd), "the proxy went silent");
    let mut buf = vec![0u8; 64 * 1024];
    match retry(|| socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
    }
}

/// Sends one packet with the descriptors `flags` asks for; false once the proxy is gone.
fn send(fd: &OwnedFd, flags: u8, body: &[u8]) -> bool {
    let mut paths = Vec::new();
    if flags & 1 != 0 {
        paths.push(if flags & 2 != 0 {
            "/dev/zero"
        } else {
            "/dev/null"
        });
    }
    if flags & 4 != 0 {
        paths.push("/dev/full");
    }
    let files: Vec<File> = paths
        .into_iter()
        .map(|path| File::open(path).expect("a device to pass"))
        .collect();
    let raw: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [IoSlice::new(body)];
    retry(|| socket::sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None))
        .is_ok()
}

/// Plays the node agent: hello, then every packet of `data`, checking each answer.
pub fn zds_requests(data: &[u8]) {
    let dir = TempDir::new();
    let path = dir.0.join("zds.sock");
    let listener = listen(&path);
    let (stop, stopped) = watch::channel(false);
    let settings = InpodSettings {
        zds_socket: path,
        del_drain_deadline: Duration::ZERO,
        drain_deadline: Duration::ZERO,
    };
    let proxy = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(InpodClient::new(settings, Idle, Readiness::new()).run(stopped));
    });
    assert!(readable(&listener), "the proxy never connected");
    let agent = retry(|| socket::accept(listener.as_raw_fd())).expect("accept");
    // SAFETY: `accept` just returned this descriptor, owned by nobody else.
    let agent = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(agent) };
    let hello = receive(&agent).expect("the proxy says hello");
    ZdsHello::decode(hello.as_slice()).expect("the hello decodes");
    for (flags, body) in frames(data).into_iter().take(MAX_PACKETS) {
        if !send(&agent, flags, body) {
            break;
        }
        let Some(answer) = receive(&agent) else {
            break;
        };
        let answer = WorkloadResponse::decode(answer.as_slice()).expect("the answer decodes");
        assert!(
            matches!(answer.payload, Some(workload_response::Payload::Ack(_))),
            "the answer is not an Ack"
        );
    }
    drop(agent);
    let _ = stop.send(true);
    proxy.join().expect("the proxy thread ends");
}
