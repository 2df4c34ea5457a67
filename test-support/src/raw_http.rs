//! HTTP/1.1 written and read by hand over plain TCP: the admin endpoints see exactly the
//! bytes a test sends, and a test reads exactly what they answer.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A whole response: the request asked the server to close the connection after it.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status code; 0 when the answer has no status line.
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    /// Everything after the head.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `request` (the raw text of a request that asks to close) to `addr` and reads the
/// answer to its end.
pub async fn try_exchange(addr: SocketAddr, request: &str) -> io::Result<Reply> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}

/// As [`try_exchange`], panicking when the connection or the answer fails.
pub async fn exchange(addr: SocketAddr, request: &str) -> Reply {
    try_exchange(addr, request)
        .await
        .unwrap_or_else(|e| panic!("HTTP exchange with {addr}: {e}"))
}

/// The text of a `method path` request that asks the server to close afterwards.
pub fn request_text(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// `method path` on `addr`.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Reply {
    exchange(addr, &request_text(method, path)).await
}

/// `GET path` on `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path).await
}

/// `GET path` on `addr`, or why it failed (nothing listening yet, a closed connection).
pub async fn try_get(addr: SocketAddr, path: &str) -> io::Result<Reply> {
    try_exchange(addr, &request_text("GET", path)).await
}
