//! ZDS framing: one protobuf message per unix SEQPACKET packet, a network namespace file
//! descriptor riding along as `SCM_RIGHTS` with `AddWorkload`.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

/// One end of a ZDS connection.
pub struct ZdsStream {
    _private: (),
}

impl ZdsStream {
    /// Connects to the node agent's socket.
    pub async fn connect(path: &Path) -> std::io::Result<ZdsStream> {
        let _ = path;
        todo!()
    }

    /// Sends one message, with `fd` attached when given.
    pub async fn send<M: prost::Message>(
        &self,
        message: &M,
        fd: Option<BorrowedFd<'_>>,
    ) -> std::io::Result<()> {
        let _ = (message, fd);
        todo!()
    }

    /// Receives one message and the descriptor attached to it, if any. A closed peer is
    /// `UnexpectedEof`.
    pub async fn recv<M: prost::Message + Default>(&self) -> std::io::Result<(M, Option<OwnedFd>)> {
        todo!()
    }
}

/// The node agent's listening socket.
pub struct ZdsListener {
    _private: (),
}

impl ZdsListener {
    /// Binds `path` (replacing a stale socket file), mode 0600.
    pub fn bind(path: &Path) -> std::io::Result<ZdsListener> {
        let _ = path;
        todo!()
    }

    /// Waits for the proxy to connect.
    pub async fn accept(&self) -> std::io::Result<ZdsStream> {
        todo!()
    }
}
