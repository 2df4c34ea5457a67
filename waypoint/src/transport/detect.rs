//! Protocol detection on a tunnel's first bytes: the HTTP/2 connection preface (prior
//! knowledge, RFC 9113 §3.4), an HTTP/1.x request line, or anything else (opaque TCP). The
//! bytes read are replayed to whoever serves the stream ([`Prefixed`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The client connection preface of HTTP/2.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token accepted as the start of an HTTP/1.x request line.
const MAX_METHOD: usize = 20;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/2 with prior knowledge (gRPC included).
    Http2,
    /// An HTTP/1.x request line.
    Http1,
    /// Neither: opaque bytes.
    Opaque,
    /// The peer closed without sending anything.
    Empty,
}

/// Reads just enough of `stream` into `buf` to tell the protocol (at most the preface's 24
/// bytes); the caller must replay `buf`.
///
/// Cancel safe: bytes read are in `buf` at every await point, so a caller that gives up
/// waiting (a silent, server-first protocol) can still [`classify`] and replay them.
pub async fn detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Detected> {
    loop {
        if let Some(verdict) = decided(buf) {
            return Ok(verdict);
        }
        let mut chunk = [0u8; H2_PREFACE.len()];
        let want = H2_PREFACE.len() - buf.len();
        let n = stream.read(&mut chunk[..want]).await?;
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 {
            return Ok(classify(buf));
        }
    }
}

/// The verdict, once `buf` holds enough to give one.
fn decided(buf: &[u8]) -> Option<Detected> {
    if buf.len() >= H2_PREFACE.len() {
        return Some(classify(buf));
    }
    if buf.is_empty() || H2_PREFACE.starts_with(buf) {
        return None;
    }
    if buf.contains(&b' ') {
        return Some(classify(buf));
    }
    // Still a plausible method token: wait for the space that ends it.
    let plausible = buf.len() <= MAX_METHOD && buf.iter().all(|b| is_tchar(*b));
    (!plausible).then_some(Detected::Opaque)
}

/// The verdict on `buf`, taken as all the bytes there will be to decide with.
pub fn classify(buf: &[u8]) -> Detected {
    if buf.is_empty() {
        Detected::Empty
    } else if buf == H2_PREFACE {
        Detected::Http2
    } else if looks_like_request_line(buf) {
        Detected::Http1
    } else {
        Detected::Opaque
    }
}

/// Whether `buf` starts with a method token (RFC 9110 tchar) followed by a space.
fn looks_like_request_line(buf: &[u8]) -> bool {
    let Some(space) = buf.iter().position(|b| *b == b' ') else {
        return false;
    };
    (1..=MAX_METHOD).contains(&space) && buf[..space].iter().all(|b| is_tchar(*b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A stream whose first bytes were already read: they are returned again before the rest.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Replays `prefix`, then reads from `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            offset: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.offset < self.prefix.len() {
            let n = (self.prefix.len() - self.offset).min(buf.remaining());
            let start = self.offset;
            buf.put_slice(&self.prefix[start..start + n]);
            self.offset += n;
            if self.offset == self.prefix.len() {
                self.prefix = Vec::new();
                self.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Writes `parts` one at a time into a pipe and detects on the other end.
    async fn detect_parts(parts: &[&[u8]]) -> (Detected, Vec<u8>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for part in parts {
                client.write_all(&part).await.unwrap();
                tokio::task::yield_now().await;
            }
            client.shutdown().await.unwrap();
        });
        let mut server = server;
        let mut prefix = Vec::new();
        let detected = detect(&mut server, &mut prefix).await.unwrap();
        let mut replayed = Prefixed::new(prefix.clone(), server);
        let mut all = Vec::new();
        replayed.read_to_end(&mut all).await.unwrap();
        writer.await.unwrap();
        (detected, prefix, all)
    }

    #[tokio::test]
    async fn http2_preface_split_over_reads() {
        let mut rest = H2_PREFACE.to_vec();
        rest.extend_from_slice(b"\x00\x00\x00\x04");
        let (detected, prefix, all) = detect_parts(&[&rest[..3], &rest[3..10], &rest[10..]]).await;
        assert_eq!(detected, Detected::Http2);
        assert_eq!(prefix, H2_PREFACE);
        assert_eq!(all, rest, "every byte is replayed in order");
    }

    #[tokio::test]
    async fn http1_request_lines() {
        let request = b"GET /items HTTP/1.1\r\nHost: orders\r\n\r\n";
        let (detected, prefix, all) = detect_parts(&[request]).await;
        assert_eq!(detected, Detected::Http1);
        assert!(prefix.len() <= H2_PREFACE.len());
        assert_eq!(all, request);
        // "PRI" that is not the preface is still a method.
        let (detected, _, _) = detect_parts(&[b"PRI", b"NT /x HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(detected, Detected::Http1);
        // A short request still decides on EOF.
        let (detected, _, _) = detect_parts(&[b"GET /"]).await;
        assert_eq!(detected, Detected::Http1);
    }

    #[tokio::test]
    async fn opaque_and_empty_streams() {
        let (detected, _, all) =
            detect_parts(&[b"\x16\x03\x01\x02\x00binary handshake bytes"]).await;
        assert_eq!(detected, Detected::Opaque);
        assert_eq!(all, b"\x16\x03\x01\x02\x00binary handshake bytes");
        let (detected, _, _) = detect_parts(&[b"hello"]).await;
        assert_eq!(detected, Detected::Opaque);
        // A non-token byte decides at once, without waiting for more.
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"\x00\x01").await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            detect(&mut server, &mut buf).await.unwrap(),
            Detected::Opaque
        );
        assert_eq!(buf, b"\x00\x01");
        let (detected, prefix, _) = detect_parts(&[]).await;
        assert_eq!((detected, prefix.len()), (Detected::Empty, 0));
    }
}
