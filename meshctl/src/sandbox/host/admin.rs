//! A minimal blocking HTTP/1.1 GET, from inside a network namespace or from meshctl's own:
//! enough for the controller's and proxies' admin endpoints (`/ready`, `/debug/config_dump`)
//! and Prometheus's query API, without a runtime or a host-side port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::netns::connect_in;

/// Largest response read (a config dump of a big sandbox fits easily).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// Why a GET failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting or talking failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP we understand, or too large.
    #[error("bad HTTP response: {0}")]
    Malformed(String),
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (chunked encoding removed).
    pub body: Vec<u8>,
    /// The answering process, when it names itself (`x-process-id`, the proxies' admin
    /// endpoints): two proxies may share a port during an overlapping restart.
    pub process: Option<i32>,
}

/// GETs `path` from `127.0.0.1:port` inside `netns`.
pub fn get(netns: &str, port: u16, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    get_at(
        Some(netns),
        addr,
        &format!("127.0.0.1:{port}"),
        path,
        timeout,
    )
}

/// POSTs to `path` (no body) at `127.0.0.1:port` inside `netns`.
pub fn post(netns: &str, port: u16, path: &str, timeout: Duration) -> Result<Response, HttpError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let host = format!("127.0.0.1:{port}");
    request_at(Some(netns), addr, &host, "POST", path, timeout)
}

/// GETs `path` from `addr`, connecting from inside `netns` (meshctl's own namespace when
/// `None`), with `host` as the Host header; each step bounded by `timeout`.
pub fn get_at(
    netns: Option<&str>,
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> Result<Response, HttpError> {
    request_at(netns, addr, host, "GET", path, timeout)
}

/// Sends `method path` without a body; see [`get_at`].
fn request_at(
    netns: Option<&str>,
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut stream = match netns {
        Some(netns) => connect_in(netns, addr, timeout)?,
        None => TcpStream::connect_timeout(&addr, timeout)?,
    };
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE as u64 + 1).read_to_end(&mut raw)?;
    if raw.len() > MAX_RESPONSE {
        return Err(HttpError::Malformed(format!(
            "larger than {MAX_RESPONSE} bytes"
        )));
    }
    parse(&raw)
}

/// Percent-encodes all but RFC 3986's unreserved characters and `/`, as a query value needs.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Parses a complete `Connection: close` response.
pub fn parse(raw: &[u8]) -> Result<Response, HttpError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let mut chunked = false;
    let mut length = None;
    let mut process = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("x-process-id") {
            process = value.parse::<i32>().ok();
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| HttpError::Malformed("body shorter than content-length".into()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        body,
        process,
    })
}

/// Removes chunked transfer encoding.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let bad = |m: &str| HttpError::Malformed(format!("chunked body: {m}"));
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no chunk size"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(|| bad("truncated chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or_else(|| bad("truncated chunk"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_delimited_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\nextra").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"ready\n".as_slice()));
        let r = parse(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n6\r\nready\n\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice()),
            (503, b"not ready\n".as_slice())
        );
        let r = parse(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!(r.body, b"nope");
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"SSH-2.0 x\r\n\r\n").is_err());
    }

    #[test]
    fn names_the_answering_process_when_it_says() {
        let r = parse(b"HTTP/1.1 200 OK\r\nX-Process-Id: 4242\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(r.unwrap().process, Some(4242));
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(r.process, None);
    }
}
