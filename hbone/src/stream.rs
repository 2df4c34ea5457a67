//! One HBONE tunnel as a byte stream: an HTTP/2 stream's DATA frames in both directions.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest chunk handed to HTTP/2 per write: one maximum-size frame.
const MAX_WRITE: usize = crate::settings::MAX_FRAME_SIZE as usize;
/// Writes are copied into blocks this many times their size, so that one allocation serves
/// several writes and is reused once HTTP/2 has sent them all. An allocation per write (of
/// up to the relay's 256 KiB) cost more in page faults than the copy itself.
const WRITE_BLOCK_WRITES: usize = 4;

/// A tunnel's bytes. Shutting down the write half sends END_STREAM (a TCP half-close carried
/// across the tunnel); the read half reports EOF when the peer does the same.
pub struct TunnelStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Data received but not yet read by the caller (at most one frame).
    pending: Bytes,
    /// The block writes are copied into: what HTTP/2 has not sent yet is split off it.
    outgoing: BytesMut,
    write_closed: bool,
    /// Kept alive for as long as the stream: releases the pool slot on drop.
    _slot: Option<Box<dyn Send + Sync>>,
}

impl TunnelStream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        slot: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            outgoing: BytesMut::new(),
            write_closed: false,
            _slot: slot,
        }
    }
}

impl std::fmt::Debug for TunnelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelStream")
            .field("pending", &self.pending.len())
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

fn to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        match e.into_io() {
            Some(io) => io,
            None => io::Error::other("HTTP/2 I/O error"),
        }
    } else {
        io::Error::new(io::ErrorKind::ConnectionReset, e)
    }
}

impl TunnelStream {
    /// The next bytes received, as HTTP/2 delivered them (no copy); `None` once the peer has
    /// finished sending.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(None)),
                Some(Ok(data)) => {
                    // Return the window at once: what we hold is bounded to one frame (here,
                    // or with the caller until it has written it out).
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                // A peer that resets with NO_ERROR has simply finished (RFC 9113 §8.1).
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(None));
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
        Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))))
    }

    /// Sends the front of `chunk`, as much as the peer's window allows now, without copying
    /// it (HTTP/2 holds a reference until it has written it); returns how much was sent.
    pub fn poll_send_chunk(
        &mut self,
        cx: &mut Context<'_>,
        chunk: &mut Bytes,
    ) -> Poll<io::Result<usize>> {
        if chunk.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_send_capacity(cx, chunk.len()))?;
        self.send
            .send_data(chunk.split_to(n), false)
            .map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    /// Waits until HTTP/2 lets this stream send some of `wanted` bytes; returns how many.
    fn poll_send_capacity(
        &mut self,
        cx: &mut Context<'_>,
        wanted: usize,
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send.reserve_capacity(wanted.min(MAX_WRITE));
        loop {
            match ready!(self.send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => return Poll::Ready(Ok(n.min(wanted))),
            }
        }
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(mut data) = ready!(self.poll_chunk(cx))? else {
            return Poll::Ready(Ok(()));
        };
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        data.advance(n);
        // What did not fit is read next time.
        self.pending = data;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = ready!(self.poll_send_capacity(cx, buf.len()))?;
        if self.outgoing.capacity() < n {
            self.outgoing.reserve(n * WRITE_BLOCK_WRITES);
        }
        self.outgoing.extend_from_slice(&buf[..n]);
        let chunk = self.outgoing.split().freeze();
        self.send.send_data(chunk, false).map_err(to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes frames as soon as the connection task runs; nothing is held back here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            self.send.send_data(Bytes::new(), true).map_err(to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}
