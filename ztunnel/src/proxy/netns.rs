//! A pod's network namespace, held open by its file descriptor, and running socket creation
//! inside it.

use std::os::fd::OwnedFd;

/// A network namespace the proxy creates sockets in.
pub struct PodNetns {
    _fd: OwnedFd,
}

impl PodNetns {
    /// Wraps an open network namespace file descriptor (from ZDS).
    pub fn new(fd: OwnedFd) -> Self {
        Self { _fd: fd }
    }

    /// Runs `f` on the current thread switched into this namespace, then switches back.
    /// Sockets created by `f` stay in this namespace for their whole life.
    pub fn run<T>(&self, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let _ = f;
        todo!()
    }
}
