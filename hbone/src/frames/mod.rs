//! Deadlines the HTTP/2 stacks do not have: a reader of the frame headers a peer sends that
//! ends the connection when the preface and first SETTINGS, or an open header block, take
//! too long, or when a header block grows too large.
//!
//! It sits between the transport and the HTTP/2 stack (h2 for HBONE, hyper inside the
//! waypoint's tunnels) and fails their reads once a limit trips, which makes them drop the
//! connection. Only the 9-byte frame headers are parsed; payloads are counted and skipped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limits::Limit;

pub mod wire;

use wire::{CONTINUATION, END_HEADERS, FRAME_HEADER_LEN, HEADERS, PREFACE, PUSH_PROMISE, SETTINGS};

/// The bounds a [`FrameGuard`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// Until the preface and the first SETTINGS frame have fully arrived.
    pub handshake_timeout: Duration,
    /// From a HEADERS (or PUSH_PROMISE) frame until its block's END_HEADERS frame has arrived.
    pub header_block_timeout: Duration,
    /// Largest header block on the wire (payloads of HEADERS and CONTINUATION together).
    pub max_header_block_bytes: usize,
}

/// Which limit, if any, ended a guarded connection; readable after the guard has moved into
/// the HTTP/2 stack.
#[derive(Clone, Debug, Default)]
pub struct Tripped(Arc<AtomicUsize>);

impl Tripped {
    /// The limit that failed the connection's reads, if one did.
    pub fn get(&self) -> Option<Limit> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Limit::from_index(n - 1),
        }
    }

    fn set(&self, limit: Limit) {
        let index = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.0.store(index + 1, Ordering::Relaxed);
    }
}

/// An I/O stream whose reads fail once a [`FrameLimits`] bound is crossed.
pub struct FrameGuard<S> {
    inner: S,
    parser: Parser,
    limits: FrameLimits,
    deadline: Pin<Box<Sleep>>,
    /// What the deadline stands for; `None` when it is not armed.
    armed: Option<Limit>,
    /// The header block the deadline was armed for.
    armed_block: u64,
    tripped: Tripped,
}

impl<S> FrameGuard<S> {
    /// Guards `inner`, whose first bytes are a client's HTTP/2 preface; the handshake
    /// deadline starts now.
    pub fn new(inner: S, limits: FrameLimits) -> Self {
        Self {
            inner,
            parser: Parser::default(),
            limits,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            armed: Some(Limit::Http2HandshakeTimeout),
            armed_block: 0,
            tripped: Tripped::default(),
        }
    }

    /// A handle telling, later, which limit ended the connection.
    pub fn tripped(&self) -> Tripped {
        self.tripped.clone()
    }

    /// Follows the parser after new bytes: arms the header deadline when a block starts,
    /// disarms it when no block is open; trips at once on an oversized block.
    fn update(&mut self) -> Result<(), Limit> {
        if self.parser.block_bytes > self.limits.max_header_block_bytes {
            return Err(Limit::HeaderTooLarge);
        }
        if !self.parser.settings_seen {
            return Ok(());
        }
        if self.parser.in_block {
            if self.armed != Some(Limit::HeaderTimeout) || self.armed_block != self.parser.blocks {
                let at = Instant::now() + self.limits.header_block_timeout;
                self.deadline.as_mut().reset(at);
                self.armed = Some(Limit::HeaderTimeout);
                self.armed_block = self.parser.blocks;
            }
        } else {
            self.armed = None;
        }
        Ok(())
    }

    fn trip(&mut self, limit: Limit) -> Poll<io::Result<()>> {
        self.tripped.set(limit);
        self.armed = None;
        let kind = match limit {
            Limit::HeaderTooLarge => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::TimedOut,
        };
        Poll::Ready(Err(io::Error::new(kind, format!("HTTP/2 limit: {limit}"))))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(limit) = this.tripped.get() {
            return this.trip(limit);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.parser.feed(&buf.filled()[before..]);
                match this.update() {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(limit) => {
                        // A failed read hands out no bytes.
                        buf.set_filled(before);
                        this.trip(limit)
                    }
                }
            }
            Poll::Pending => match this.armed {
                // Registers the timer with this task: it wakes the stack, whose next read
                // fails here.
                Some(limit) if this.deadline.as_mut().poll(cx).is_ready() => this.trip(limit),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the parser is in the byte stream.
#[derive(Debug)]
enum Position {
    /// Inside the preface, this many bytes matched.
    Preface(usize),
    /// Inside a frame header, this many bytes read.
    Header(usize),
    /// Inside a frame's payload, this many bytes left.
    Payload(usize),
    /// Not HTTP/2 after all: the stack will refuse it; nothing more to track.
    Off,
}

/// The frame-level state a peer's bytes put a connection in.
#[derive(Debug)]
struct Parser {
    position: Position,
    header: [u8; FRAME_HEADER_LEN],
    /// The current frame, once its header is complete: type and flags.
    frame: (u8, u8),
    settings_seen: bool,
    /// A header block has started and its END_HEADERS frame has not fully arrived.
    in_block: bool,
    /// Wire bytes of the open header block (0 when none is open).
    block_bytes: usize,
    /// Header blocks started so far.
    blocks: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            position: Position::Preface(0),
            header: [0; FRAME_HEADER_LEN],
            frame: (0, 0),
            settings_seen: false,
            in_block: false,
            block_bytes: 0,
            blocks: 0,
        }
    }
}

impl Parser {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.position {
                Position::Preface(seen) => {
                    let n = bytes.len().min(PREFACE.len() - seen);
                    if bytes[..n] != PREFACE[seen..seen + n] {
                        self.position = Position::Off;
                        return;
                    }
                    bytes = &bytes[n..];
                    self.position = if seen + n == PREFACE.len() {
                        Position::Header(0)
                    } else {
                        Position::Preface(seen + n)
                    };
                }
                Position::Header(seen) => {
                    let n = bytes.len().min(FRAME_HEADER_LEN - seen);
                    self.header[seen..seen + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if seen + n == FRAME_HEADER_LEN {
                        self.frame_started();
                    } else {
                        self.position = Position::Header(seen + n);
                    }
                }
                Position::Payload(left) => {
                    let n = bytes.len().min(left);
                    bytes = &bytes[n..];
                    if n == left {
                        self.frame_finished();
                    } else {
                        self.position = Position::Payload(left - n);
                    }
                }
                Position::Off => return,
            }
        }
    }

    fn frame_started(&mut self) {
        let (len, kind, flags) = wire::header(&self.header);
        self.frame = (kind, flags);
        match kind {
            HEADERS | PUSH_PROMISE => {
                if !self.in_block {
                    self.blocks += 1;
                }
                self.in_block = true;
                self.block_bytes = self.block_bytes.saturating_add(len);
            }
            CONTINUATION if self.in_block => {
                self.block_bytes = self.block_bytes.saturating_add(len);
            }
            _ => {}
        }
        if len == 0 {
            self.frame_finished();
        } else {
            self.position = Position::Payload(len);
        }
    }

    fn frame_finished(&mut self) {
        let (kind, flags) = self.frame;
        match kind {
            SETTINGS => self.settings_seen = true,
            HEADERS | PUSH_PROMISE | CONTINUATION if flags & END_HEADERS != 0 => {
                self.in_block = false;
                self.block_bytes = 0;
            }
            _ => {}
        }
        self.position = Position::Header(0);
    }
}

#[cfg(test)]
mod tests;
