//! A packet capture for tests, with no tool beyond the kernel: an `AF_PACKET` socket opened
//! inside one network namespace (the sandbox's fabric, which every packet between nodes
//! crosses) records the TCP flows it sees and whether chosen byte strings ever crossed in
//! clear.
//!
//! The kernel queues captured frames as they pass and a thread reads them; [`Sniffer::sync`]
//! waits until every frame queued before the call has been read, so a test can tell "not
//! seen" from "not read yet".

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most distinct flows remembered; a test needs far fewer.
const MAX_FLOWS: usize = 100_000;
/// Largest frame read (jumbo frames and offloaded segments included).
const FRAME_BUFFER: usize = 256 * 1024;
/// Kernel receive buffer, so bursts of a load test are not dropped before they are read.
const SOCKET_BUFFER: libc::c_int = 16 << 20;
/// Longest [`Sniffer::sync`] waits for the reader to catch up.
const SYNC_LIMIT: Duration = Duration::from_secs(30);

/// One direction of a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiver.
    pub dst: SocketAddrV4,
}

#[derive(Default)]
struct Seen {
    flows: BTreeSet<Flow>,
    /// Watched byte strings and whether a TCP payload contained one.
    markers: Vec<(Vec<u8>, bool)>,
}

/// A running capture; stops when dropped.
pub struct Sniffer {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    /// Counts the times the reader found the kernel queue empty with every frame it had
    /// taken already recorded.
    drained: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sniffer {
    /// Starts capturing every frame of every interface of the namespace at `netns`
    /// (for example `/run/netns/<name>`).
    pub fn start(netns: &Path) -> io::Result<Sniffer> {
        let socket = open_packet_socket(netns)?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicU64::new(0));
        let thread = {
            let (seen, stop, drained) = (seen.clone(), stop.clone(), drained.clone());
            std::thread::Builder::new()
                .name("sniffer".into())
                .spawn(move || read_frames(&socket, &seen, &stop, &drained))?
        };
        Ok(Sniffer {
            seen,
            stop,
            drained,
            thread: Some(thread),
        })
    }

    /// Waits until every frame captured before this call has been read and recorded: the
    /// reader has since found the kernel's queue empty. Panics if it never catches up.
    pub fn sync(&self) {
        let start = self.drained.load(Ordering::SeqCst);
        let deadline = Instant::now() + SYNC_LIMIT;
        // Two more drains: the first may have been decided before this call began.
        while self.drained.load(Ordering::SeqCst) < start + 2 {
            assert!(
                Instant::now() < deadline,
                "the packet capture did not catch up within {SYNC_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts looking for `marker` in every TCP payload from now on.
    pub fn watch(&self, marker: &str) {
        lock(&self.seen)
            .markers
            .push((marker.as_bytes().to_vec(), false));
    }

    /// Whether `marker` (watched earlier) crossed in clear.
    pub fn saw(&self, marker: &str) -> bool {
        lock(&self.seen)
            .markers
            .iter()
            .any(|(m, hit)| *hit && m == marker.as_bytes())
    }

    /// The flows seen since the start or the last [`clear`](Self::clear).
    pub fn flows(&self) -> BTreeSet<Flow> {
        lock(&self.seen).flows.clone()
    }

    /// Ports of `server` that `client` exchanged TCP segments with, in either direction.
    pub fn server_ports(&self, client: Ipv4Addr, server: Ipv4Addr) -> BTreeSet<u16> {
        let flows = self.flows();
        let to_server = flows
            .iter()
            .filter(|f| (*f.src.ip(), *f.dst.ip()) == (client, server))
            .map(|f| f.dst.port());
        let from_server = flows
            .iter()
            .filter(|f| (*f.src.ip(), *f.dst.ip()) == (server, client))
            .map(|f| f.src.port());
        to_server.chain(from_server).collect()
    }

    /// Forgets the flows seen so far (markers stay).
    pub fn clear(&self) {
        lock(&self.seen).flows.clear();
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Opens a raw packet socket inside `netns`. A short-lived thread enters the namespace, so
/// no other code of the test ever runs there; the socket stays bound to that namespace.
fn open_packet_socket(netns: &Path) -> io::Result<OwnedFd> {
    let ns = File::open(netns)?;
    std::thread::spawn(move || -> io::Result<OwnedFd> {
        // SAFETY: setns on this thread only, with a namespace file we hold open.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let protocol = libc::c_int::from((libc::ETH_P_ALL as u16).to_be());
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(raw) };
        // A read timeout lets the reader notice it should stop.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        set_option(&socket, libc::SO_RCVTIMEO, &timeout)?;
        set_option(&socket, libc::SO_RCVBUF, &SOCKET_BUFFER)?;
        Ok(socket)
    })
    .join()
    .map_err(|_| io::Error::other("the sniffer's setup thread panicked"))?
}

fn set_option<T>(socket: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel holds no captured frame for `socket` (`SIOCINQ` on a packet socket is
/// the size of the next queued frame, 0 when there is none).
fn queue_empty(socket: &OwnedFd) -> bool {
    let mut next: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int into `next`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut next) };
    rc == 0 && next == 0
}

fn read_frames(socket: &OwnedFd, seen: &Mutex<Seen>, stop: &AtomicBool, drained: &AtomicU64) {
    let mut buffer = vec![0u8; FRAME_BUFFER];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: recv into a buffer we own, of the length given.
        let n = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        // n <= 0: timeout (EAGAIN) or interruption; check `stop` and read again.
        if n > 0 {
            record(&buffer[..n as usize], seen);
        }
        // Every frame taken so far is recorded: if the queue is empty now, whatever was
        // captured before this point has been seen.
        if queue_empty(socket) {
            drained.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Records a frame's flow and the markers its TCP payload holds.
fn record(frame: &[u8], seen: &Mutex<Seen>) {
    let Some((flow, payload)) = parse_tcp(frame) else {
        return;
    };
    let mut seen = lock(seen);
    if seen.flows.len() < MAX_FLOWS {
        seen.flows.insert(flow);
    }
    if !payload.is_empty() {
        for (marker, hit) in seen.markers.iter_mut() {
            if !*hit && payload.windows(marker.len()).any(|w| w == &marker[..]) {
                *hit = true;
            }
        }
    }
}

/// The flow and payload of an Ethernet frame carrying IPv4 TCP.
fn parse_tcp(frame: &[u8]) -> Option<(Flow, &[u8])> {
    const ETHERNET_HEADER: usize = 14;
    const ETHERTYPE_IPV4: u16 = 0x0800;
    const PROTOCOL_TCP: u8 = 6;
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET_HEADER..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != PROTOCOL_TCP {
        return None;
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    // Frames may be padded past the IP packet: the IP total length says where it ends.
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let tcp = ip.get(header..total)?;
    if tcp.len() < 20 {
        return None;
    }
    let address = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let port = |at: usize| u16::from_be_bytes([tcp[at], tcp[at + 1]]);
    let flow = Flow {
        src: SocketAddrV4::new(address(12), port(0)),
        dst: SocketAddrV4::new(address(16), port(2)),
    };
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    Some((flow, tcp.get(data_offset..).unwrap_or(&[])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use test_support::netns::TestNetns;

    /// Sends `payload` over a loopback TCP connection inside `ns` and waits for the echo.
    fn send_in(ns: &TestNetns, payload: &'static [u8]) {
        ns.run(move || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            client.write_all(payload).unwrap();
            let mut buffer = vec![0u8; payload.len()];
            server.read_exact(&mut buffer).unwrap();
            server.write_all(&buffer).unwrap();
            client.read_exact(&mut buffer).unwrap();
        });
    }

    #[test]
    fn after_sync_clear_text_that_crossed_is_seen_and_nothing_else() {
        let ns = TestNetns::new("e2e-sniff");
        let sniffer = Sniffer::start(&ns.path()).unwrap();
        sniffer.watch("plain-marker-1");
        sniffer.watch("never-sent-marker");
        send_in(&ns, b"GET /plain-marker-1 HTTP/1.1\r\n\r\n");
        sniffer.sync();
        assert!(sniffer.saw("plain-marker-1"));
        assert!(!sniffer.saw("never-sent-marker"));
        assert!(!sniffer.flows().is_empty());
    }

    /// An Ethernet + IPv4 + TCP frame with `payload`, plus Ethernet padding.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        f.extend(ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&15008u16.to_be_bytes());
        tcp[12] = 5 << 4;
        f.extend(tcp);
        f.extend(payload);
        f.extend([0u8; 6]);
        f
    }

    #[test]
    fn parses_flow_and_payload_without_padding() {
        let f = frame(b"GET /x");
        let (flow, payload) = parse_tcp(&f).unwrap();
        assert_eq!(flow.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(flow.dst, "10.0.0.2:15008".parse().unwrap());
        assert_eq!(payload, b"GET /x");
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(parse_tcp(&arp).is_none());
        assert!(parse_tcp(&f[..30]).is_none());
    }
}
