//! The HBONE server's request parsing (`hbone::server::serve_h2`): what a peer's HTTP/2
//! connection turns into, before any handler sees it.
//!
//! - [`FRAMES`]: raw bytes after the client preface (SETTINGS, HEADERS with HPACK, DATA,
//!   RST_STREAM, GOAWAY, ...), as a hostile peer could send them;
//! - [`CONNECT`]: well-encoded requests built from a text description (`METHOD target`,
//!   header lines, a blank line, the tunnel's bytes), sent by a real HTTP/2 client, so the
//!   mutations reach the checks on method, `:authority` and headers. Its oracle: a
//!   `CONNECT` to `ip:port` gets the handler's answer, anything else 400, and an accepted
//!   tunnel echoes its bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hbone::{ConnectHandler, IncomingConnect};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;

use super::support::{PATIENCE, client_identity, paused_runtime};
use crate::mutate::Shape;
use crate::target::Target;

/// Raw HTTP/2 frames from a peer.
pub const FRAMES: Target = Target {
    name: "hbone_frames",
    run: hbone_frames,
    shape: Shape::Bytes,
    dictionary: &[
        b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        b"\x00\x00\x00\x04\x01\x00\x00\x00\x00",
        b"\x00\x00\x08\x07\x00\x00\x00\x00\x00",
        b"\x00\x00\x04\x03\x00\x00\x00\x00\x01",
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x01",
        b"\x00\x00\x00\x09\x04\x00\x00\x00\x01",
        b"\x00\x00\x00\x00\x01\x00\x00\x00\x01",
        b"\x7f\xff\xff\xff",
        b"\x82\x84\x86",
    ],
    max_len: 16 * 1024,
};

/// CONNECT requests described as text.
pub const CONNECT: Target = Target {
    name: "hbone_connect",
    run: hbone_connect,
    shape: Shape::Text,
    dictionary: &[
        b"CONNECT",
        b"GET",
        b"10.244.1.10:8080",
        b"[fd00::7]:80",
        b"10.0.0.1:65536",
        b"forwarded: for=\"10.0.1.7:41234\"",
        b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"baggage: k8s.namespace.name=shop",
        b"for=",
        b"\"[::ffff:10.0.0.1]:5\"",
        b"host: ",
        b"content-length: 0",
    ],
    max_len: 4 * 1024,
};

/// The HTTP/2 client preface every connection starts with.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Most tunnel bytes a handler echoes.
const ECHO_LIMIT: usize = 64 * 1024;

fn peer() -> SocketAddr {
    SocketAddr::from(([10, 244, 1, 5], 40000))
}

fn local() -> SocketAddr {
    SocketAddr::from(([10, 244, 2, 10], 15008))
}

/// A handler answering by the destination port: `port % 3` 0 denies (401), 1 drops the
/// request unanswered (503), 2 accepts and echoes. It reads the headers a proxy reads.
struct Probe;

/// The status [`Probe`] answers a tunnel to `authority` with.
fn probe_status(authority: SocketAddr) -> StatusCode {
    match authority.port() % 3 {
        0 => StatusCode::UNAUTHORIZED,
        1 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    }
}

impl ConnectHandler for Probe {
    async fn handle(&self, connect: IncomingConnect) {
        let _ = hbone::forwarded::client(&connect.headers);
        let mut headers = connect.headers.clone();
        waypoint::engine::identify_request(&mut headers);
        match probe_status(connect.authority) {
            StatusCode::UNAUTHORIZED => connect.reject(StatusCode::UNAUTHORIZED),
            StatusCode::OK => {
                if let Ok(tunnel) = connect.accept() {
                    echo(tunnel).await;
                }
            }
            _ => drop(connect),
        }
    }
}

async fn echo(mut tunnel: hbone::TunnelStream) {
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    while total < ECHO_LIMIT {
        match tunnel.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                total += n;
                if tunnel.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = tunnel.shutdown().await;
}

/// Runs the server side on `server` until the connection ends, with `client` talking to it;
/// panics if the two do not finish within [`PATIENCE`].
async fn with_server<C, F>(server: DuplexStream, client: C) -> F::Output
where
    C: FnOnce() -> F,
    F: Future,
{
    // The sender stays alive: a closed drain channel would drain the connection.
    let (_drain, drain) = watch::channel(false);
    let serve = hbone::server::serve_h2(server, client_identity(), peer(), local(), Probe, drain);
    let both = async { tokio::join!(serve, client()).1 };
    tokio::time::timeout(PATIENCE, both)
        .await
        .expect("the HBONE server neither answered nor closed the connection")
}

/// Sends the preface and `data` as a peer's HTTP/2 bytes, then closes its side.
pub fn hbone_frames(data: &[u8]) {
    paused_runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let answer = with_server(server, || async move {
            let (mut rx, mut tx) = tokio::io::split(client);
            let send = async {
                let _ = tx.write_all(PREFACE).await;
                let _ = tx.write_all(data).await;
                let _ = tx.shutdown().await;
            };
            let receive = async {
                let mut answer = Vec::new();
                let _ = rx.read_to_end(&mut answer).await;
                answer
            };
            tokio::join!(send, receive).1
        })
        .await;
        // A server speaks first with its SETTINGS frame.
        if answer.len() >= 9 {
            assert_eq!(answer[3], 4, "the server's first frame is not SETTINGS");
        }
    });
}

/// A request as [`CONNECT`] describes it: `METHOD target`, header lines, a blank line, the
/// bytes to send through the tunnel.
struct Described {
    request: Request<()>,
    body: Bytes,
}

fn describe(data: &[u8]) -> Option<Described> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&first[..space]).ok()?;
    let target = &first[space + 1..];
    let uri = if method == Method::CONNECT {
        Uri::builder().authority(target.to_vec()).build().ok()?
    } else {
        Uri::try_from(target.to_vec()).ok()?
    };
    let mut request = Request::builder().method(method).uri(uri).body(()).ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            request.headers_mut().append(name, value);
        }
    }
    Some(Described {
        request,
        body: Bytes::copy_from_slice(body),
    })
}

/// The answer the server owes `request`: the handler's for a `CONNECT` to `ip:port`, else
/// 400.
fn expected_status(request: &Request<()>) -> StatusCode {
    let authority = request
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok());
    match (request.method(), authority) {
        (&Method::CONNECT, Some(authority)) => probe_status(authority),
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Sends the described request with a real HTTP/2 client and checks the answer.
pub fn hbone_connect(data: &[u8]) {
    let Some(described) = describe(data) else {
        return;
    };
    paused_runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        with_server(server, || exchange(client, described)).await;
    });
}

async fn exchange(io: DuplexStream, described: Described) {
    let Ok((mut sender, connection)) = h2::client::handshake(io).await else {
        return;
    };
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let expected = expected_status(&described.request);
    // The client refuses some requests itself (connection-specific headers, a missing
    // scheme): those never reach the server and say nothing about it.
    if let Ok((response, mut stream)) = sender.send_request(described.request, false)
        && let Ok(response) = response.await
    {
        assert_eq!(response.status(), expected, "wrong answer to the request");
        if response.status() == StatusCode::OK {
            let _ = stream.send_data(described.body.clone(), true);
            let echoed = read_body(response.into_body()).await;
            if let Some(echoed) = echoed {
                assert_eq!(echoed, described.body, "the tunnel did not echo its bytes");
            }
        }
    }
    drop(sender);
    driver.abort();
}

/// The whole body, or `None` if the stream broke.
async fn read_body(mut body: h2::RecvStream) -> Option<Bytes> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Some(Bytes::from(out))
}

/// Records what is written through it.
struct Tee {
    inner: DuplexStream,
    written: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl tokio::io::AsyncRead for Tee {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tee {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &polled {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            written.extend_from_slice(&buf[..*n]);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a real HTTP/2 client (with HBONE's window and frame sizes) writes to send
/// `requests` one after the other on one connection, each with its tunnel bytes, to the
/// HBONE server: seeds for [`FRAMES`], and for HTTP/2 to the waypoint. The preface included.
pub(crate) fn client_bytes(requests: Vec<(Request<()>, Bytes)>) -> Vec<u8> {
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tee_written = written.clone();
    paused_runtime().block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let tee = Tee {
            inner: client,
            written: tee_written,
        };
        with_server(server, || async move {
            let handshake = h2::client::Builder::new()
                .initial_window_size(hbone::settings::STREAM_WINDOW)
                .initial_connection_window_size(hbone::settings::CONNECTION_WINDOW)
                .max_frame_size(hbone::settings::MAX_FRAME_SIZE)
                .handshake::<_, Bytes>(tee)
                .await;
            let (mut sender, connection) = handshake.expect("an HTTP/2 handshake");
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            for (request, body) in requests {
                let Ok((response, mut stream)) = sender.send_request(request, false) else {
                    continue;
                };
                let _ = stream.send_data(body, true);
                if let Ok(response) = response.await {
                    let _ = read_body(response.into_body()).await;
                }
            }
            drop(sender);
            driver.abort();
        })
        .await;
    });
    let written = written.lock().unwrap_or_else(|e| e.into_inner());
    written.clone()
}
