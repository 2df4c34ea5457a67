//! `meshctl app ws`: a WebSocket client for the echo (HTTP/1.1 upgrade, or with `--http2`
//! an HTTP/2 extended CONNECT, RFC 8441). It sends N messages while reading their echoes,
//! checks each echo byte for byte, then closes (or, with `--expect-server-close`, waits for
//! the server to close first) and prints a JSON report on stdout.

use std::io::Write as _;

use bytes::Bytes;
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::client::{Target, parse_header, with_timeout};
use super::error::AppError;
use super::http_echo::POD_HEADER;
use super::websocket::{self, CLOSE_NORMAL, Frame, opcode};

/// Arguments of `meshctl app ws`.
#[derive(clap::Args, Debug, Clone)]
pub struct WsArgs {
    /// URL of the WebSocket (ws:// or http://; the scheme may be left out).
    pub url: String,
    /// Extra handshake header "name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Messages to send (text and binary in turn); each must come back unchanged.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub messages: u32,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Handshake with HTTP/2 extended CONNECT (h2c prior knowledge) instead of HTTP/1.1;
    /// needs a server or proxy speaking RFC 8441, such as the waypoint.
    #[arg(long)]
    pub http2: bool,
    /// After the echoes, wait for the server to close instead of closing first.
    #[arg(long)]
    pub expect_server_close: bool,
    /// Deadline for the whole exchange, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
}

/// What `meshctl app ws` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsReport {
    /// Status of the handshake (101, or 200 for HTTP/2).
    pub status: u16,
    /// The pod that answered (`x-echo-pod`), if it said.
    pub pod: Option<String>,
    /// Messages sent.
    pub sent: u32,
    /// Messages that came back unchanged.
    pub echoed: u32,
    /// Code of the server's close frame.
    pub close_code: Option<u16>,
    /// Who closed first: "client" or "server".
    pub closed_by: String,
}

/// Runs `ws`: exit code 22 when the handshake is refused (the status on stderr).
pub async fn run(args: WsArgs) -> Result<(), AppError> {
    let report = with_timeout(args.timeout_ms, exchange(&args)).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    Ok(())
}

/// The handshake, the messages, and the close.
pub async fn exchange(args: &WsArgs) -> Result<WsReport, AppError> {
    let url = args
        .url
        .strip_prefix("ws://")
        .map_or_else(|| args.url.clone(), |rest| format!("http://{rest}"));
    let target = Target::parse(&url)?;
    let (status, pod, upgraded) = handshake(&target, args).await?;
    let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
    let messages: Vec<Frame> = (0..args.messages).map(|i| message(i, args.size)).collect();
    let sending = async {
        for frame in &messages {
            websocket::write_frame(&mut writer, frame, true).await?;
        }
        Ok::<_, AppError>(writer)
    };
    let receiving = async {
        let mut echoed = 0;
        for expected in &messages {
            match websocket::read_frame(&mut reader).await? {
                Some(frame) if frame == *expected => echoed += 1,
                Some(frame) => {
                    return Err(AppError::Body(format!(
                        "message {echoed} came back changed (opcode {}, {} bytes)",
                        frame.opcode,
                        frame.payload.len()
                    )));
                }
                None => break,
            }
        }
        Ok(echoed)
    };
    let (mut writer, echoed) = tokio::try_join!(sending, receiving)?;
    let closed_by = if args.expect_server_close {
        "server"
    } else {
        websocket::write_frame(&mut writer, &Frame::close(CLOSE_NORMAL), true).await?;
        "client"
    };
    let close_code = read_close(&mut reader).await?;
    if args.expect_server_close {
        // Answer the server's close, as §5.5.1 asks.
        let code = close_code.unwrap_or(CLOSE_NORMAL);
        websocket::write_frame(&mut writer, &Frame::close(code), true).await?;
    }
    let _ = writer.shutdown().await;
    Ok(WsReport {
        status,
        pod,
        sent: args.messages,
        echoed,
        close_code,
        closed_by: closed_by.into(),
    })
}

/// Message `i`: text for even `i`, binary for odd, `size` bytes that tell it from the others.
fn message(i: u32, size: usize) -> Frame {
    let tag = format!("{i:08}:");
    let payload: Vec<u8> = tag
        .bytes()
        .chain(std::iter::repeat(b'x'))
        .take(size)
        .collect();
    let kind = if i.is_multiple_of(2) {
        opcode::TEXT
    } else {
        opcode::BINARY
    };
    Frame::new(kind, payload)
}

/// Reads until the server's close frame (its code) or the end of the stream.
async fn read_close<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<u16>, AppError> {
    while let Some(frame) = websocket::read_frame(reader).await? {
        if frame.opcode == opcode::CLOSE {
            return Ok(Some(frame.close_code().unwrap_or(CLOSE_NORMAL)));
        }
    }
    Ok(None)
}

/// Opens the connection and performs the opening handshake: the status, the answering pod
/// and the upgraded stream.
async fn handshake(
    target: &Target,
    args: &WsArgs,
) -> Result<(u16, Option<String>, Upgraded), AppError> {
    let io = TokioIo::new(target.connect().await?);
    let mut request = Request::builder()
        .header(SEC_WEBSOCKET_VERSION, websocket::VERSION)
        .body(Empty::<Bytes>::new())?;
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        request.headers_mut().append(name, value);
    }
    let key = websocket::client_key();
    let mut response = if args.http2 {
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = format!("http://{}{}", target.authority(), target.path_and_query())
            .parse()
            .map_err(http::Error::from)?;
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        sender.send_request(request).await?
    } else {
        *request.uri_mut() = target.path_and_query().parse().map_err(http::Error::from)?;
        let headers = request.headers_mut();
        headers.insert(
            HOST,
            HeaderValue::from_str(target.authority()).map_err(http::Error::from)?,
        );
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&key).map_err(http::Error::from)?,
        );
        let (mut sender, conn) = http1::handshake(io).await?;
        tokio::spawn(conn.with_upgrades());
        sender.send_request(request).await?
    };
    let status = response.status();
    let switched = if args.http2 {
        StatusCode::OK
    } else {
        StatusCode::SWITCHING_PROTOCOLS
    };
    if status != switched {
        return Err(AppError::HttpStatus(status.as_u16()));
    }
    if !args.http2 {
        let accept = response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .and_then(|v| v.to_str().ok());
        if accept != Some(websocket::accept_key(&key).as_str()) {
            return Err(AppError::Body(format!(
                "wrong Sec-WebSocket-Accept: {accept:?}"
            )));
        }
    }
    let pod = response
        .headers()
        .get(POD_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let upgraded = hyper::upgrade::on(&mut response).await?;
    Ok((status.as_u16(), pod, upgraded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::http_echo::{EchoSettings, serve};
    use crate::app::identity::Identity;

    /// An http-echo on loopback, answering as pod `orders-v1-abc`, until the test ends.
    async fn echo_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let identity = Identity {
            pod: "orders-v1-abc".into(),
            namespace: "shop".into(),
            version: "v1".into(),
        };
        tokio::spawn(serve(
            listener,
            EchoSettings::new(identity),
            std::future::pending(),
        ));
        addr
    }

    fn args(url: String, messages: u32) -> WsArgs {
        WsArgs {
            url,
            headers: vec!["x-test: 1".into()],
            messages,
            size: 200,
            http2: false,
            expect_server_close: false,
            timeout_ms: 10_000,
        }
    }

    #[tokio::test]
    async fn messages_come_back_from_the_echo_and_the_client_closes() {
        let addr = echo_server().await;
        let report = exchange(&args(format!("ws://{addr}/chat"), 300))
            .await
            .unwrap();
        assert_eq!(
            report,
            WsReport {
                status: 101,
                pod: Some("orders-v1-abc".into()),
                sent: 300,
                echoed: 300,
                close_code: Some(CLOSE_NORMAL),
                closed_by: "client".into(),
            }
        );
    }

    #[tokio::test]
    async fn the_echo_closes_a_quiet_connection_when_asked() {
        let addr = echo_server().await;
        let mut args = args(format!("ws://{addr}/quiet?idle_close_ms=50"), 2);
        args.expect_server_close = true;
        let report = exchange(&args).await.unwrap();
        assert_eq!((report.echoed, report.close_code), (2, Some(CLOSE_NORMAL)));
        assert_eq!(report.closed_by, "server");
    }

    #[tokio::test]
    async fn a_refused_handshake_is_an_http_status_error() {
        let addr = echo_server().await;
        // The echo's counter path answers every request with its JSON, upgrade or not.
        let refused = exchange(&args(format!("http://{addr}/_echo/stats"), 1)).await;
        assert!(
            matches!(refused, Err(AppError::HttpStatus(200))),
            "{refused:?}"
        );
    }
}
