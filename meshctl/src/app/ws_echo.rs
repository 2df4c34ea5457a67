//! WebSocket echo on http-echo's port: a request upgrading to `websocket` on any path is
//! answered 101 and every data frame is sent back as it came; pings get pongs; a close is
//! answered with the same code and the connection closed. `?idle_close_ms=N` makes the
//! server close (code 1000) once the client has sent nothing for N milliseconds.

use std::io;
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::websocket::{self, CLOSE_NORMAL, Frame, opcode};

/// Query parameter: close after this many milliseconds without a frame from the client.
pub const IDLE_CLOSE_PARAM: &str = "idle_close_ms";
/// How long a closing server waits for the client's close frame before hanging up.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Whether `request` asks to upgrade to WebSocket.
pub fn is_websocket(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade: 101 with the accept key, then echoes on the upgraded
/// connection in a task of its own. A request without a key is answered 400.
pub fn accept(mut request: Request<Incoming>) -> Result<Response<()>, StatusCode> {
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    let accept =
        HeaderValue::from_str(&websocket::accept_key(key)).map_err(|_| StatusCode::BAD_REQUEST)?;
    let idle_close = idle_close(request.uri().query());
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                if let Err(e) = echo(TokioIo::new(upgraded), idle_close).await {
                    tracing::debug!("ws-echo: {e}");
                }
            }
            Err(e) => tracing::debug!("ws-echo: upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// `idle_close_ms` of a query string.
fn idle_close(query: Option<&str>) -> Option<Duration> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == IDLE_CLOSE_PARAM)
        .and_then(|(_, value)| value.parse().ok())
        .map(Duration::from_millis)
}

/// Echoes frames until the client closes, or until it has been quiet for `idle_close`.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    idle_close: Option<Duration>,
) -> io::Result<()> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    loop {
        let next = websocket::read_frame(&mut reader);
        let frame = match idle_close {
            Some(quiet) => match tokio::time::timeout(quiet, next).await {
                Ok(frame) => frame?,
                Err(_) => {
                    websocket::write_frame(&mut writer, &Frame::close(CLOSE_NORMAL), false).await?;
                    // The client answers with its own close; then the connection ends.
                    let _ = tokio::time::timeout(CLOSE_WAIT, drain_until_close(&mut reader)).await;
                    return writer.shutdown().await;
                }
            },
            None => next.await?,
        };
        let Some(frame) = frame else {
            return writer.shutdown().await;
        };
        match frame.opcode {
            opcode::CLOSE => {
                let code = frame.close_code().unwrap_or(CLOSE_NORMAL);
                websocket::write_frame(&mut writer, &Frame::close(code), false).await?;
                return writer.shutdown().await;
            }
            opcode::PING => {
                let pong = Frame::new(opcode::PONG, frame.payload);
                websocket::write_frame(&mut writer, &pong, false).await?;
            }
            opcode::PONG => {}
            _ => websocket::write_frame(&mut writer, &frame, false).await?,
        }
    }
}

/// Reads frames until the client's close frame or the end of the stream.
async fn drain_until_close<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<()> {
    while let Some(frame) = websocket::read_frame(reader).await? {
        if frame.opcode == opcode::CLOSE {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn idle_close_comes_from_the_query() {
        assert_eq!(
            idle_close(Some("a=1&idle_close_ms=250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(idle_close(Some("idle_close_ms=x")), None);
        assert_eq!(idle_close(None), None);
    }

    #[tokio::test]
    async fn echoes_data_answers_pings_and_returns_the_close() {
        let (server, mut client) = tokio::io::duplex(4096);
        let echoing = tokio::spawn(echo(server, None));
        let text = Frame::new(opcode::TEXT, "hello");
        websocket::write_frame(&mut client, &text, true)
            .await
            .unwrap();
        let ping = Frame::new(opcode::PING, "p");
        websocket::write_frame(&mut client, &ping, true)
            .await
            .unwrap();
        websocket::write_frame(&mut client, &Frame::close(4000), true)
            .await
            .unwrap();
        async fn next(c: &mut tokio::io::DuplexStream) -> Frame {
            websocket::read_frame(c).await.unwrap().unwrap()
        }
        assert_eq!(next(&mut client).await, text);
        assert_eq!(next(&mut client).await, Frame::new(opcode::PONG, "p"));
        assert_eq!(next(&mut client).await.close_code(), Some(4000));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        echoing.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_quiet_client_is_closed_with_1000() {
        let (server, mut client) = tokio::io::duplex(4096);
        // Quiet from the start: the close is what the client waits for.
        let echoing = tokio::spawn(echo(server, Some(Duration::from_millis(20))));
        let frame = websocket::read_frame(&mut client).await.unwrap().unwrap();
        assert_eq!(frame.close_code(), Some(CLOSE_NORMAL));
        websocket::write_frame(&mut client, &Frame::close(CLOSE_NORMAL), true)
            .await
            .unwrap();
        assert_eq!(websocket::read_frame(&mut client).await.unwrap(), None);
        echoing.await.unwrap().unwrap();
    }
}
