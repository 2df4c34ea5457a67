//! ZDS framing: one protobuf message per unix SEQPACKET packet, a network namespace file
//! descriptor riding along as `SCM_RIGHTS` with `AddWorkload`.
//!
//! SEQPACKET keeps message boundaries, so no length prefix is needed: a packet is a message.
//! Packets are bounded by [`MAX_MESSAGE_SIZE`]; a larger one is refused on both sides rather
//! than truncated. A zero-length read means the peer closed (`UnexpectedEof`), so empty
//! messages are never sent. All operations are cancel-safe: a packet is consumed only inside
//! the one non-blocking system call that reads it.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;

/// Largest message either side sends or accepts. ZDS messages are a few hundred bytes; the
/// bound keeps a misbehaving peer from making us allocate without limit.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// How many descriptors one packet may carry before it is treated as malformed. ZDS sends at
/// most one; room for a few more lets us close (not leak) extras a confused peer sends.
const MAX_FDS_PER_MESSAGE: usize = 8;

/// Pending connections the listener queues. Only the node's proxy (and, during an overlapping
/// upgrade, its successor) ever connects.
const LISTEN_BACKLOG: i32 = 16;

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

/// One end of a ZDS connection.
pub struct ZdsStream {
    fd: AsyncFd<OwnedFd>,
}

impl std::fmt::Debug for ZdsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZdsStream")
            .field("fd", &self.fd.get_ref().as_raw_fd())
            .finish()
    }
}

impl ZdsStream {
    /// Connects to the node agent's socket.
    pub async fn connect(path: &Path) -> std::io::Result<ZdsStream> {
        let path = path.to_path_buf();
        // A unix connect may block while the listener's backlog is full; keep that off the
        // runtime's worker threads.
        let fd = tokio::task::spawn_blocking(move || -> io::Result<OwnedFd> {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(errno)?;
            let addr = UnixAddr::new(&path).map_err(errno)?;
            socket::connect(fd.as_raw_fd(), &addr).map_err(errno)?;
            Ok(fd)
        })
        .await
        .map_err(io::Error::other)??;
        ZdsStream::from_fd(fd)
    }

    /// Wraps a connected SEQPACKET socket (for example one end of a `socketpair`), switching
    /// it to non-blocking mode.
    pub fn from_fd(fd: OwnedFd) -> io::Result<ZdsStream> {
        set_nonblocking(fd.as_fd())?;
        Ok(ZdsStream { fd: register(fd)? })
    }

    /// A connected pair of streams, for tests and in-process use.
    pub fn pair() -> io::Result<(ZdsStream, ZdsStream)> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(errno)?;
        Ok((ZdsStream::from_fd(a)?, ZdsStream::from_fd(b)?))
    }

    /// Sends one message, with `fd` attached when given.
    pub async fn send<M: prost::Message>(
        &self,
        message: &M,
        fd: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<()> {
        let bytes = message.encode_to_vec();
        if bytes.is_empty() {
            // The receiver could not tell an empty packet from a closed peer.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to send an empty ZDS message",
            ));
        }
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ZDS message of {} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let raw: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        loop {
            let mut guard = self.fd.writable().await?;
            let result = guard.try_io(|inner| {
                let iov = [IoSlice::new(&bytes)];
                let cmsgs: Vec<ControlMessage<'_>> = if raw.is_empty() {
                    Vec::new()
                } else {
                    vec![ControlMessage::ScmRights(&raw)]
                };
                // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a process-killing SIGPIPE.
                socket::sendmsg::<()>(
                    inner.get_ref().as_raw_fd(),
                    &iov,
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(errno)
            });
            match result {
                Ok(Ok(sent)) if sent == bytes.len() => return Ok(()),
                Ok(Ok(sent)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("ZDS packet cut short: {sent} of {} bytes", bytes.len()),
                    ));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message and the descriptor attached to it, if any. A closed peer is
    /// `UnexpectedEof`.
    pub async fn recv<M: prost::Message + Default>(&self) -> std::io::Result<(M, Option<OwnedFd>)> {
        let (bytes, fd) = self.recv_packet().await?;
        let message = M::decode(bytes.as_slice())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((message, fd))
    }

    /// Reads one packet: its bytes and at most one descriptor (extras are closed).
    async fn recv_packet(&self) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| recv_once(inner.get_ref().as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// One non-blocking `recvmsg`. Received descriptors are owned immediately so every error path
/// closes them.
fn recv_once(raw: RawFd) -> io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE_SIZE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let (len, flags, mut fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = socket::recvmsg::<()>(
            raw,
            &mut iov,
            Some(&mut cmsg),
            // CLOEXEC at receipt: a descriptor must never leak into a spawned command.
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(errno)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        // With MSG_CTRUNC the kernel closed what did not fit; `cmsgs` then errs, and there is
        // nothing of ours left to close.
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(list) = c {
                    for f in list {
                        // SAFETY: the kernel just installed `f` in our table for us alone.
                        fds.push(unsafe { OwnedFd::from_raw_fd(f) });
                    }
                }
            }
        }
        (msg.bytes, msg.flags, fds)
    };
    if flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("ZDS packet larger than {MAX_MESSAGE_SIZE} bytes"),
        ));
    }
    if flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "ZDS packet carried too many descriptors",
        ));
    }
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "ZDS peer closed the connection",
        ));
    }
    if fds.len() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "ZDS packet carried {} descriptors, expected at most one",
                fds.len()
            ),
        ));
    }
    buf.truncate(len);
    Ok((buf, fds.pop()))
}

/// Hands `fd` to the runtime's reactor.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns a valid descriptor, and the `AsyncFd` keeps it, neither replaced
    // nor closed, until the `AsyncFd` itself is dropped.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(errno)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(errno)?;
    Ok(())
}

/// The node agent's listening socket.
pub struct ZdsListener {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

impl std::fmt::Debug for ZdsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZdsListener")
            .field("path", &self.path)
            .finish()
    }
}

impl ZdsListener {
    /// Binds `path` (replacing a stale socket file), mode 0600.
    pub fn bind(path: &Path) -> std::io::Result<ZdsListener> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                // Never delete something that is not ours to replace.
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(errno)?;
        let addr = UnixAddr::new(path).map_err(errno)?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(errno)?;
        // Tighten before listen(): until then nobody can connect, so there is no window in
        // which a less privileged process could reach the socket.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        socket::listen(&fd, Backlog::new(LISTEN_BACKLOG).map_err(errno)?).map_err(errno)?;
        Ok(ZdsListener {
            fd: register(fd)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket file this listener is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the proxy to connect.
    pub async fn accept(&self) -> std::io::Result<ZdsStream> {
        loop {
            let mut guard = self.fd.readable().await?;
            let accepted = guard.try_io(|inner| {
                socket::accept4(
                    inner.get_ref().as_raw_fd(),
                    SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                )
                .map_err(errno)
            });
            match accepted {
                Ok(Ok(raw)) => {
                    // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    return ZdsStream::from_fd(fd);
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::zds::{
        Ack, AddWorkload, SnapshotSent, Version, WorkloadInfo, WorkloadRequest, WorkloadResponse,
        ZdsHello, workload_request, workload_response,
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use test_support::TempDir;

    fn add(uid: &str) -> WorkloadRequest {
        WorkloadRequest {
            payload: Some(workload_request::Payload::Add(AddWorkload {
                uid: uid.into(),
                workload_info: Some(WorkloadInfo {
                    name: "pod".into(),
                    namespace: "ns".into(),
                    service_account: "sa".into(),
                }),
            })),
        }
    }

    #[tokio::test]
    async fn roundtrip_without_fd() {
        let (a, b) = ZdsStream::pair().unwrap();
        let hello = ZdsHello {
            version: Version::V1 as i32,
        };
        a.send(&hello, None).await.unwrap();
        let (got, fd): (ZdsHello, _) = b.recv().await.unwrap();
        assert_eq!(got, hello);
        assert!(fd.is_none());

        let snap = WorkloadRequest {
            payload: Some(workload_request::Payload::SnapshotSent(SnapshotSent {})),
        };
        b.send(&snap, None).await.unwrap();
        let (got, fd): (WorkloadRequest, _) = a.recv().await.unwrap();
        assert_eq!(got, snap);
        assert!(fd.is_none());
    }

    #[tokio::test]
    async fn roundtrip_with_fd_keeps_the_file_and_sets_cloexec() {
        let dir = TempDir::new("zds-fd");
        let file_path = dir.join("f");
        std::fs::write(&file_path, b"x").unwrap();
        let file = std::fs::File::open(&file_path).unwrap();

        let (a, b) = ZdsStream::pair().unwrap();
        a.send(&add("u1"), Some(file.as_fd())).await.unwrap();
        let (got, fd): (WorkloadRequest, _) = b.recv().await.unwrap();
        assert_eq!(got, add("u1"));
        let fd = fd.expect("descriptor attached");
        let received = std::fs::File::from(fd);
        assert_eq!(
            received.metadata().unwrap().ino(),
            file.metadata().unwrap().ino()
        );
        let flags = nix::fcntl::fcntl(received.as_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[tokio::test]
    async fn closed_peer_is_unexpected_eof() {
        let (a, b) = ZdsStream::pair().unwrap();
        drop(a);
        let err = b.recv::<WorkloadResponse>().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn empty_messages_are_refused() {
        let (a, _b) = ZdsStream::pair().unwrap();
        let err = a.send(&ZdsHello::default(), None).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn oversized_packets_are_refused_not_truncated() {
        let (a, b) = ZdsStream::pair().unwrap();
        // Write a raw packet past the limit directly, as a misbehaving peer would.
        let big = vec![0x0a_u8; MAX_MESSAGE_SIZE + 1];
        let n = nix::sys::socket::send(a.fd.get_ref().as_raw_fd(), &big, MsgFlags::MSG_NOSIGNAL)
            .unwrap();
        assert_eq!(n, big.len());
        let err = b.recv::<WorkloadRequest>().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn listener_replaces_stale_socket_and_restricts_mode() {
        let dir = TempDir::new("zds-listen");
        let path = dir.join("nested").join("ztunnel.sock");
        let first = ZdsListener::bind(&path).unwrap();
        drop(first); // leaves the socket file behind, as a crashed agent would
        assert!(path.exists());
        let listener = ZdsListener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let client = tokio::spawn({
            let path = path.clone();
            async move {
                let c = ZdsStream::connect(&path).await.unwrap();
                c.send(
                    &ZdsHello {
                        version: Version::V1 as i32,
                    },
                    None,
                )
                .await
                .unwrap();
                let (resp, _): (WorkloadResponse, _) = c.recv().await.unwrap();
                resp
            }
        });
        let server = listener.accept().await.unwrap();
        let (hello, _): (ZdsHello, _) = server.recv().await.unwrap();
        assert_eq!(hello.version, Version::V1 as i32);
        let ack = WorkloadResponse {
            payload: Some(workload_response::Payload::Ack(Ack::default())),
        };
        server.send(&ack, None).await.unwrap();
        assert_eq!(client.await.unwrap(), ack);
    }

    #[test]
    fn listener_refuses_to_replace_a_regular_file() {
        let dir = TempDir::new("zds-file");
        let path = dir.join("not-a-socket");
        std::fs::write(&path, b"data").unwrap();
        let err = ZdsListener::bind(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
