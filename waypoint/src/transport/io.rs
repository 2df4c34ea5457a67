//! The byte streams requests and pass-through connections travel on to an endpoint: an HBONE
//! tunnel or a plain TCP connection, behind one boxed type. Opening them is
//! [`outbound`](super::outbound)'s job; the HTTP connection pool and the TCP pass-through only
//! carry them, so this module imports nothing else of the transport.

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to an endpoint: an HBONE tunnel or a TCP connection.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
/// A boxed [`Io`].
pub type BoxedIo = Box<dyn Io>;
