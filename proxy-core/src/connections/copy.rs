//! The copy between the two sides of a relayed connection, one direction at a time.
//!
//! Bytes move as [`Bytes`] chunks. A side that is an HBONE tunnel hands over the chunks
//! HTTP/2 received and takes the chunks it is given as they are: the relay copies nothing
//! into or out of a tunnel, only between its buffer and the kernel for plain sockets.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hbone::TunnelStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

/// First read size of each direction. Most connections carry little at a time, and a node
/// holds many of them: they start small, and hold no buffer at all while idle (a buffer this
/// small is given back whenever the reader has nothing, and taken again on its next read).
pub(super) const INITIAL_BUFFER: usize = 1024;
/// Largest read of one direction. A direction whose reads keep filling their buffer doubles
/// it up to this, so bulk transfers move large chunks: fewer reads, writes, HTTP/2 frames and
/// wake-ups per byte.
pub(super) const MAX_BUFFER: usize = 256 * 1024;
/// Reads one buffer serves when they go into a tunnel: HTTP/2 holds each chunk until its
/// connection task has written it, so a buffer cannot be reused at once; one allocation for
/// several reads costs less than one per read (large ones are mapped and unmapped each time).
const READS_PER_TUNNEL_BUFFER: usize = 4;

/// The tunnel `side` is, if it is one. Each side's type is known where the relay is built,
/// so this check costs nothing at run time.
fn tunnel_of<T: Any>(side: &mut T) -> Option<&mut TunnelStream> {
    (side as &mut dyn Any).downcast_mut::<TunnelStream>()
}

/// The two directions of a relayed connection, counting what they move (readable even if
/// the relay is cut midway).
pub(super) struct Relay<C, S> {
    client: C,
    server: S,
    /// Client to server.
    pub(super) up: Direction,
    /// Server to client.
    pub(super) down: Direction,
}

impl<C, S> Relay<C, S> {
    pub(super) fn new(client: C, server: S) -> Self {
        Self {
            client,
            server,
            up: Direction::default(),
            down: Direction::default(),
        }
    }
}

impl<C, S> Future for Relay<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin + Any,
    S: AsyncRead + AsyncWrite + Unpin + Any,
{
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let up = this.up.poll_copy(cx, &mut this.client, &mut this.server)?;
        let down = this
            .down
            .poll_copy(cx, &mut this.server, &mut this.client)?;
        if up.is_ready() && down.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// One direction of a relay: reads a chunk, writes it out, passes the end of the stream on
/// as a shutdown.
pub(super) struct Direction {
    /// Where reads from a plain stream land; each read's bytes are split off as `chunk`.
    /// Unallocated while idle at the initial size.
    buffer: BytesMut,
    /// The buffer before `buffer`, reused once the writer has let go of every chunk cut from
    /// it: a tunnel's HTTP/2 queue holds up to a buffer's worth, so two take turns and a
    /// bulk transfer allocates (and faults in fresh pages) only at its start.
    previous: BytesMut,
    /// How much a read from a plain stream asks for: grows while reads fill it (a tunnel's
    /// reads come as HTTP/2 received them).
    pub(super) size: usize,
    /// Read and not yet written (holds no buffer once written).
    chunk: Bytes,
    /// The reader reached its end.
    eof: bool,
    /// The writer was shut down: this direction is over.
    done: bool,
    /// Something was written since the last flush.
    unflushed: bool,
    /// Bytes read.
    pub(super) read: u64,
    /// Bytes written.
    pub(super) written: u64,
}

impl Default for Direction {
    fn default() -> Self {
        Self {
            buffer: BytesMut::new(),
            previous: BytesMut::new(),
            size: INITIAL_BUFFER,
            chunk: Bytes::new(),
            eof: false,
            done: false,
            unflushed: false,
            read: 0,
            written: 0,
        }
    }
}

impl Direction {
    /// Moves bytes from `reader` to `writer` until the reader ends (then shuts the writer
    /// down and is ready) or neither side can make progress now.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + Any,
        W: AsyncWrite + Unpin + Any,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.chunk.is_empty() && !self.eof {
                let reads_per_buffer = match tunnel_of(writer) {
                    Some(_) => READS_PER_TUNNEL_BUFFER,
                    None => 1,
                };
                if self.poll_read(cx, reader, reads_per_buffer)?.is_pending() {
                    // Idle: a small buffer goes back (a large one stays, for the bulk
                    // transfer that pauses between reads, where reallocating it would map
                    // and unmap pages each time).
                    if self.size == INITIAL_BUFFER {
                        self.buffer = BytesMut::new();
                        self.previous = BytesMut::new();
                    }
                    // Nothing more to send for now: push out what was written.
                    if self.unflushed {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
            while !self.chunk.is_empty() {
                let n = ready!(self.poll_write(cx, writer))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n as u64;
                self.unflushed = true;
            }
            // Written: let go of the buffer it was cut from, which can then be reused.
            self.chunk = Bytes::new();
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads the next chunk: a tunnel's as received, a plain stream's into the buffer.
    fn poll_read<R: AsyncRead + Unpin + Any>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        reads_per_buffer: usize,
    ) -> Poll<io::Result<()>> {
        let chunk = match tunnel_of(reader) {
            Some(tunnel) => ready!(tunnel.poll_chunk(cx))?.unwrap_or_default(),
            None => ready!(self.poll_read_buffer(cx, reader, reads_per_buffer))?,
        };
        self.read += chunk.len() as u64;
        self.eof = chunk.is_empty();
        self.chunk = chunk;
        Poll::Ready(Ok(()))
    }

    /// Reads up to `size` bytes from a plain stream into the buffer and splits them off.
    fn poll_read_buffer<R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        reads_per_buffer: usize,
    ) -> Poll<io::Result<Bytes>> {
        // A buffer is reused once every chunk cut from it is written; while the writer still
        // holds some of both, the next reads go into a new one.
        if self.buffer.capacity() < self.size && !self.buffer.try_reclaim(self.size) {
            std::mem::swap(&mut self.buffer, &mut self.previous);
            if !self.buffer.try_reclaim(self.size) {
                self.buffer = BytesMut::with_capacity(self.size * reads_per_buffer);
            }
        }
        let mut limited = (&mut self.buffer).limit(self.size);
        let n = ready!(poll_read_buf(Pin::new(reader), cx, &mut limited))?;
        // The read filled the whole buffer: more is likely waiting, read larger chunks.
        if n == self.size && self.size < MAX_BUFFER {
            self.size = (self.size * 2).min(MAX_BUFFER);
        }
        Poll::Ready(Ok(self.buffer.split().freeze()))
    }

    /// Writes the front of the chunk: handed to a tunnel as it is, copied to a plain stream.
    fn poll_write<W: AsyncWrite + Unpin + Any>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
    ) -> Poll<io::Result<usize>> {
        if let Some(tunnel) = tunnel_of(writer) {
            return tunnel.poll_send_chunk(cx, &mut self.chunk);
        }
        let n = ready!(Pin::new(&mut *writer).poll_write(cx, &self.chunk))?;
        self.chunk.advance(n.min(self.chunk.len()));
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copy_buffers_grow_for_bulk_and_stay_small_for_small_messages() {
        let (mut client_app, client_proxy) = tokio::io::duplex(2 * MAX_BUFFER);
        let (server_proxy, mut server_app) = tokio::io::duplex(2 * MAX_BUFFER);
        let mut relay = Relay::new(client_proxy, server_proxy);
        let bulk: Vec<u8> = (0..4 * MAX_BUFFER).map(|i| (i % 251) as u8).collect();
        let send = async {
            client_app.write_all(&bulk).await.unwrap();
            client_app.shutdown().await.unwrap();
        };
        let serve = async {
            let mut got = Vec::new();
            server_app.read_to_end(&mut got).await.unwrap();
            server_app.write_all(b"ok").await.unwrap();
            server_app.shutdown().await.unwrap();
            got
        };
        let (relayed, (), got) = tokio::join!(&mut relay, send, serve);
        relayed.unwrap();
        assert!(got == bulk, "the bulk arrived intact");
        let mut reply = Vec::new();
        client_app.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ok");
        assert_eq!(relay.up.size, MAX_BUFFER);
        assert_eq!(relay.down.size, INITIAL_BUFFER);
        assert_eq!(relay.up.read, bulk.len() as u64);
        assert_eq!(relay.up.written, bulk.len() as u64);
        assert_eq!((relay.down.read, relay.down.written), (2, 2));
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_copy_buffer() {
        let (mut client_app, client_proxy) = tokio::io::duplex(64);
        let (server_proxy, mut server_app) = tokio::io::duplex(64);
        let mut relay = Relay::new(client_proxy, server_proxy);
        let exchange = async {
            client_app.write_all(b"ping").await.unwrap();
            let mut got = [0; 4];
            server_app.read_exact(&mut got).await.unwrap();
            server_app.write_all(b"pong").await.unwrap();
            client_app.read_exact(&mut got).await.unwrap();
            got
        };
        tokio::select! {
            got = exchange => assert_eq!(&got, b"pong"),
            relayed = &mut relay => panic!("the relay ended: {relayed:?}"),
        }
        // Nothing more to read either way: once polled again, neither direction holds memory.
        assert!(futures_poll_once(&mut relay).await.is_pending());
        assert_eq!(
            (relay.up.buffer.capacity(), relay.down.buffer.capacity()),
            (0, 0)
        );
        assert!(relay.up.chunk.is_empty() && relay.down.chunk.is_empty());
        assert_eq!(
            (relay.up.previous.capacity(), relay.down.previous.capacity()),
            (0, 0)
        );
        assert_eq!((relay.up.read, relay.down.read), (4, 4));
        // And the next message is relayed as the first was.
        client_app.write_all(b"again").await.unwrap();
        let mut got = [0; 5];
        tokio::select! {
            read = server_app.read_exact(&mut got) => { read.unwrap(); }
            relayed = &mut relay => panic!("the relay ended: {relayed:?}"),
        }
        assert_eq!(&got, b"again");
    }

    /// Polls `future` once.
    async fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }
}
