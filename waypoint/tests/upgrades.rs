//! Protocol upgrades through the waypoint's transport over real TLS and HBONE on loopback:
//! an HTTP/1.1 upgrade and an HTTP/2 extended CONNECT reach the endpoint as HTTP/1.1 upgrade
//! requests and are relayed both ways after its 101 (half-closes passed on); `Upgrade: h2c`
//! and answers other than 101 upgrade nothing.

// Shared with the transport tests, which use the rest of it.
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;

use bytes::Bytes;
use harness::*;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// A mesh with orders behind the waypoint; tunnels to the HTTP port of orders.
struct Mesh {
    controller: Controller,
    endpoint: Endpoint,
    waypoint: Waypoint,
}

impl Mesh {
    async fn start() -> Self {
        let config = waypoint_config(Vec::new());
        let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
        let endpoint = Endpoint::start(&controller).await;
        let waypoint = Waypoint::start(&controller, &endpoint).await;
        Self {
            controller,
            endpoint,
            waypoint,
        }
    }

    async fn tunnel(&self) -> hbone::TunnelStream {
        let client: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        tunnel(&self.controller, self.waypoint.addr, vip(HTTP_PORT), client)
            .await
            .unwrap()
    }

    /// An HTTP/1.1 GET of `path` asking to upgrade to `protocol`, on a new tunnel.
    async fn upgrade_http1(
        &self,
        path: &str,
        protocol: &str,
    ) -> http::Response<hyper::body::Incoming> {
        let io = TokioIo::new(self.tunnel().await);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection.with_upgrades());
        let request = Request::get(path)
            .header(HOST, HOST)
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(UPGRADE, protocol)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    }
}

/// Sends `message`, half-closes, and reads everything that comes back.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.unwrap();
    back
}

#[tokio::test]
async fn an_http1_upgrade_is_relayed_both_ways_after_the_101() {
    let mesh = Mesh::start().await;
    let mut response = mesh.upgrade_http1("/upgrade", "echo").await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()[UPGRADE], "echo");
    assert_eq!(response.headers()[CONNECTION], "upgrade");
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    // The client's half-close reaches the endpoint, whose echo then ends the stream.
    let back = round_trip(TokioIo::new(upgraded), b"hello through the waypoint").await;
    assert_eq!(back, b"hello through the waypoint");
    let requests = mesh.endpoint.requests();
    assert_eq!(
        requests,
        ["GET /upgrade HTTP/1.1 upgrade=echo x-request-id"],
        "the endpoint sees the upgrade as sent, through the engine"
    );
}

#[tokio::test]
async fn an_answer_other_than_101_upgrades_nothing() {
    let mesh = Mesh::start().await;
    let response = mesh.upgrade_http1("/plain", "echo").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key(UPGRADE));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "orders-v1 GET /plain HTTP/1.1 upgrade=echo");
}

#[tokio::test]
async fn h2c_upgrades_are_served_as_plain_http1() {
    let mesh = Mesh::start().await;
    let io = TokioIo::new(mesh.tunnel().await);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    let request = Request::get("/upgrade")
        .header(HOST, HOST)
        .header(CONNECTION, "Upgrade, HTTP2-Settings")
        .header(UPGRADE, "h2c")
        .header("http2-settings", "AAMAAABkAAQAAP__")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_11);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body, "orders-v1 GET /upgrade HTTP/1.1",
        "no upgrade reached it"
    );
}

#[tokio::test]
async fn an_http2_extended_connect_goes_on_as_an_http1_websocket_upgrade() {
    let mesh = Mesh::start().await;
    let io = TokioIo::new(mesh.tunnel().await);
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{HOST}/upgrade"))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "RFC 8441: 200, not 101");
    assert!(!response.headers().contains_key(UPGRADE));
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let back = round_trip(TokioIo::new(upgraded), b"over an HTTP/2 stream").await;
    assert_eq!(back, b"over an HTTP/2 stream");
    assert_eq!(
        mesh.endpoint.requests(),
        ["GET /upgrade HTTP/1.1 upgrade=websocket key x-request-id"]
    );
}
