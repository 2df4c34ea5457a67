//! A pod's network namespace, held open by its file descriptor, and running socket creation
//! inside it.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole life.
//! So the proxy switches one thread into the pod's namespace just long enough to create (and
//! bind) a socket, then switches it back; everything after that (connect, accept, I/O) works on
//! the socket from any thread.

use std::cell::{Cell, OnceCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::sched::{CloneFlags, setns};

use super::source_ports::SourcePorts;

/// The calling thread's own network namespace (not the process's: threads may differ).
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Which network namespace a descriptor or file is: the device and inode of its nsfs file,
/// on which every descriptor of one namespace agrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NsId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl NsId {
    /// The namespace `fd` refers to.
    pub fn of(fd: impl AsFd) -> io::Result<NsId> {
        let stat = nix::sys::stat::fstat(fd)?;
        Ok(NsId {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }
}

/// A network namespace the proxy creates sockets in.
pub struct PodNetns {
    fd: OwnedFd,
    /// The namespace's ephemeral ports, read on the first connection from a client's address.
    source_ports: OnceLock<SourcePorts>,
}

impl std::fmt::Debug for PodNetns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetns").field("fd", &self.fd).finish()
    }
}

impl PodNetns {
    /// Wraps an open network namespace file descriptor (from ZDS).
    pub fn new(fd: OwnedFd) -> Self {
        Self {
            fd,
            source_ports: OnceLock::new(),
        }
    }

    /// The ports connections from a client's address take, in turn. The first call reads the
    /// namespace's settings from inside it; later ones do not switch namespaces.
    pub(crate) fn source_ports(&self) -> io::Result<&SourcePorts> {
        if let Some(ports) = self.source_ports.get() {
            return Ok(ports);
        }
        self.run(|| {
            Ok(self
                .source_ports
                .get_or_init(SourcePorts::of_current_namespace))
        })
    }

    /// Opens the namespace file at `path` (e.g. `/var/run/netns/<name>` or
    /// `/proc/<pid>/ns/net`).
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        Ok(Self::new(File::open(path)?.into()))
    }

    /// Runs `f` on the current thread switched into this namespace, then switches back.
    /// Sockets created by `f` stay in this namespace for their whole life.
    ///
    /// `f` must be synchronous and short (socket(), setsockopt, bind, listen): the thread is
    /// in the pod's namespace while it runs. The thread returns to the namespace it had
    /// before, even if `f` panics. Outside `run`, a thread is taken to stay in one namespace
    /// (the proxy's threads never switch otherwise): that namespace is opened once per thread,
    /// not once per call.
    pub fn run<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        // Inside another `run`, the namespace to return to is that run's pod's: opened afresh.
        // Opened before switching: once inside, "our" namespace can no longer be named.
        let enclosing: Option<OwnedFd> = if DEPTH.get() > 0 {
            Some(File::open(THREAD_NETNS)?.into())
        } else {
            None
        };
        HOME.with(|cached| {
            let home = match (&enclosing, cached.get()) {
                (Some(fd), _) | (None, Some(fd)) => fd.as_fd(),
                (None, None) => {
                    let fd: OwnedFd = File::open(THREAD_NETNS)?.into();
                    cached.get_or_init(|| fd).as_fd()
                }
            };
            setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            DEPTH.set(DEPTH.get() + 1);
            let _restore = Restore { home };
            f()
        })
    }
}

thread_local! {
    /// This thread's own namespace, opened on its first `run`. Opening it (a procfs lookup)
    /// costs more than both switches together, and `run` is on the path of every proxied
    /// connection.
    static HOME: OnceCell<OwnedFd> = const { OnceCell::new() };
    /// How many `run`s this thread is inside.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Switches the thread back into its namespace when dropped (also while unwinding).
struct Restore<'a> {
    home: BorrowedFd<'a>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home, CloneFlags::CLONE_NEWNET) {
            // A thread stranded in a pod's namespace would silently create every later socket
            // of every pod there. Returning to a namespace we just left, through a descriptor
            // we hold, cannot fail short of a broken kernel: stop rather than misroute traffic.
            tracing::error!(error = %e, "cannot return to the proxy's network namespace");
            std::process::abort();
        }
        DEPTH.set(DEPTH.get().saturating_sub(1));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A fresh, empty network namespace, alive as long as the returned descriptor.
    pub(crate) fn new_namespace() -> OwnedFd {
        std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
            // The thread ends right after: its namespace lives on through this descriptor.
            OwnedFd::from(File::open(THREAD_NETNS).expect("open namespace"))
        })
        .join()
        .expect("namespace thread")
    }

    fn current_inode() -> u64 {
        std::fs::metadata(THREAD_NETNS).unwrap().ino()
    }

    fn inode(fd: &OwnedFd) -> u64 {
        nix::sys::stat::fstat(fd.as_fd()).unwrap().st_ino
    }

    #[test]
    fn runs_inside_and_returns() {
        let fd = new_namespace();
        let target = inode(&fd);
        let before = current_inode();
        assert_ne!(before, target);
        let netns = PodNetns::new(fd);
        let inside = netns.run(|| Ok(current_inode())).unwrap();
        assert_eq!(inside, target);
        assert_eq!(current_inode(), before);
    }

    #[test]
    fn nested_runs_return_to_the_enclosing_namespace() {
        let (outer, inner) = (new_namespace(), new_namespace());
        let (outer_ino, inner_ino) = (inode(&outer), inode(&inner));
        let (outer, inner) = (PodNetns::new(outer), PodNetns::new(inner));
        let before = current_inode();
        for _ in 0..2 {
            let (seen_inside, seen_after) = outer
                .run(|| Ok((inner.run(|| Ok(current_inode()))?, current_inode())))
                .unwrap();
            assert_eq!((seen_inside, seen_after), (inner_ino, outer_ino));
            assert_eq!(current_inode(), before);
        }
    }

    /// The inode of the network namespace `socket` belongs to (SIOCGSKNS).
    fn socket_namespace(socket: &impl std::os::fd::AsRawFd) -> u64 {
        const SIOCGSKNS: libc::c_ulong = 0x894C;
        // SAFETY: the ioctl takes no argument and returns a new descriptor or -1.
        let fd = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS as _) };
        assert!(fd >= 0, "SIOCGSKNS: {}", io::Error::last_os_error());
        // SAFETY: `fd` was just returned to us and is owned by nobody else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        inode(&fd)
    }

    #[test]
    fn sockets_stay_in_the_namespace_they_were_made_in() {
        let fd = new_namespace();
        let target = inode(&fd);
        let netns = PodNetns::new(fd);
        let inside = netns
            .run(|| std::net::TcpListener::bind("0.0.0.0:0"))
            .unwrap();
        assert_eq!(socket_namespace(&inside), target);
        let outside = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        assert_eq!(socket_namespace(&outside), current_inode());
    }

    #[test]
    fn errors_and_panics_still_return() {
        let netns = PodNetns::new(new_namespace());
        let before = current_inode();
        let err = netns
            .run(|| -> io::Result<()> { Err(io::Error::other("boom")) })
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(current_inode(), before);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = netns.run(|| -> io::Result<()> { panic!("inside") });
        }));
        assert!(panicked.is_err());
        assert_eq!(current_inode(), before);
    }
}
