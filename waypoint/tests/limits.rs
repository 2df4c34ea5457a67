//! The waypoint's limits on the HTTP it serves inside tunnels, with the HTTP/2 bytes written
//! by hand into real HBONE tunnels: stalled HTTP/2 openings and header blocks, idle HTTP/2
//! and HTTP/1.1 connections, rapid resets. Each test shortens only the limit it is about.

// Shared with the transport tests, which use the rest of it.
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use harness::*;
use hbone::frames::wire::{
    CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PREFACE, RST_STREAM, SETTINGS, encode,
    goaway_codes,
};
use hbone::{Limit, LimitCounters, ServerLimits, TunnelStream};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use test_support::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::transport::InboundSettings;
use waypoint::transport::serving::HTTP_LISTENER;

/// Short enough for a quick test, long next to anything a loopback exchange needs.
const SHORT: Duration = Duration::from_millis(300);
const ENHANCE_YOUR_CALM: u32 = 0xb;
const CANCEL: u32 = 0x8;

/// A controller, the orders endpoint and a waypoint serving with `settings`.
struct World {
    controller: Controller,
    endpoint: Endpoint,
    waypoint: Waypoint,
}

impl World {
    async fn start(settings: InboundSettings) -> Self {
        let config = waypoint_config(Vec::new());
        let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
        let endpoint = Endpoint::start(&controller).await;
        let waypoint = Waypoint::start_with(&controller, &endpoint, settings).await;
        Self {
            controller,
            endpoint,
            waypoint,
        }
    }

    /// A tunnel to the orders service's HTTP port, as the client pod's ztunnel opens it.
    async fn tunnel(&self) -> TunnelStream {
        let target = SocketAddr::new(VIP.parse().unwrap(), HTTP_PORT);
        let client = "10.1.2.3:40000".parse().unwrap();
        tunnel(&self.controller, self.waypoint.addr, target, client)
            .await
            .expect("a tunnel through the waypoint")
    }

    fn http(&self) -> Arc<LimitCounters> {
        self.waypoint.metrics.connection_limits(HTTP_LISTENER)
    }

    async fn counted(&self, limit: Limit, want: u64) {
        let counters = self.http();
        eventually(
            &format!("{want} HTTP connection(s) counted as {limit}"),
            || counters.get(limit) == want,
        )
        .await;
    }
}

fn limits(limits: ServerLimits) -> InboundSettings {
    InboundSettings {
        limits,
        ..InboundSettings::default()
    }
}

/// The preface and an empty SETTINGS frame: an HTTP/2 client's opening.
fn opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(encode(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK block for `GET http://orders/` (static-table fields and one literal).
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 6];
    block.extend_from_slice(b"orders");
    block
}

/// What the waypoint sent on `tunnel` until it closed it (a reset counts as closed).
async fn read_until_closed(tunnel: &mut TunnelStream) -> Vec<u8> {
    let mut seen = Vec::new();
    // The bound only keeps a broken waypoint from hanging the test.
    let read = tokio::time::timeout(Duration::from_secs(60), tunnel.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the waypoint closes the connection");
    seen
}

async fn send(tunnel: &mut TunnelStream, bytes: &[u8]) {
    tunnel.write_all(bytes).await.unwrap();
    tunnel.flush().await.unwrap();
}

#[tokio::test]
async fn an_idle_h2c_connection_gets_goaway_and_is_closed() {
    let world = World::start(limits(ServerLimits {
        idle_timeout: SHORT,
        ..ServerLimits::default()
    }))
    .await;
    let mut tunnel = world.tunnel().await;
    send(&mut tunnel, &opening()).await;
    let sent = read_until_closed(&mut tunnel).await;
    assert_eq!(goaway_codes(&sent), [0], "a graceful GOAWAY first");
    world.counted(Limit::Idle, 1).await;
}

#[tokio::test]
async fn h2c_without_settings_is_closed_at_the_handshake_deadline() {
    let world = World::start(limits(ServerLimits {
        http2_handshake_timeout: SHORT,
        ..ServerLimits::default()
    }))
    .await;
    let mut tunnel = world.tunnel().await;
    send(&mut tunnel, PREFACE).await;
    read_until_closed(&mut tunnel).await;
    world.counted(Limit::Http2HandshakeTimeout, 1).await;
}

#[tokio::test]
async fn an_h2c_header_block_without_end_headers_is_closed() {
    let world = World::start(limits(ServerLimits {
        header_block_timeout: SHORT,
        ..ServerLimits::default()
    }))
    .await;
    let mut tunnel = world.tunnel().await;
    let mut bytes = opening();
    let block = get_block();
    bytes.extend(encode(HEADERS, END_STREAM, 1, &block[..3]));
    bytes.extend(encode(CONTINUATION, 0, 1, &block[3..5]));
    send(&mut tunnel, &bytes).await;
    read_until_closed(&mut tunnel).await;
    world.counted(Limit::HeaderTimeout, 1).await;
    assert_eq!(world.http().get(Limit::Idle), 0);
}

#[tokio::test]
async fn h2c_rapid_resets_get_goaway_enhance_your_calm() {
    let world = World::start(InboundSettings::default()).await;
    let mut tunnel = world.tunnel().await;
    let mut bytes = opening();
    let rounds = ServerLimits::default().max_pending_accept_reset_streams as u32 * 3;
    for i in 0..rounds {
        let stream = 2 * i + 1;
        bytes.extend(encode(
            HEADERS,
            END_HEADERS | END_STREAM,
            stream,
            &get_block(),
        ));
        bytes.extend(encode(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    send(&mut tunnel, &bytes).await;
    let sent = read_until_closed(&mut tunnel).await;
    assert!(
        goaway_codes(&sent).contains(&ENHANCE_YOUR_CALM),
        "GOAWAY ENHANCE_YOUR_CALM, got {:?}",
        goaway_codes(&sent)
    );
    world.counted(Limit::Http2Abuse, 1).await;
}

#[tokio::test]
async fn http1_heads_and_idle_keep_alive_stay_bounded_by_the_head_deadline() {
    let world = World::start(InboundSettings {
        header_read_timeout: SHORT,
        ..InboundSettings::default()
    })
    .await;
    // Nothing at all, then half a request head: both closed at the head deadline.
    let mut silent = world.tunnel().await;
    read_until_closed(&mut silent).await;
    let mut slow = world.tunnel().await;
    send(&mut slow, b"GET / HTTP/1.1\r\nHost: orders\r\n").await;
    read_until_closed(&mut slow).await;
    world.counted(Limit::HeaderTimeout, 2).await;
}

#[tokio::test]
async fn a_request_in_progress_keeps_its_connection_past_the_idle_timeout() {
    let idle_timeout = Duration::from_secs(1);
    let world = World::start(limits(ServerLimits {
        idle_timeout,
        ..ServerLimits::default()
    }))
    .await;
    let tunnel = world.tunnel().await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tunnel))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{HOST}/slow"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    // The sender comes back with the answer: dropping it would close the connection.
    let response = tokio::spawn(async move {
        let response = sender.send_request(request).await;
        (sender, response)
    });
    eventually("the slow request reaches the endpoint", || {
        world
            .endpoint
            .requests()
            .iter()
            .any(|r| r.contains("/slow"))
    })
    .await;
    // Several idle timeouts pass while the endpoint holds the answer.
    tokio::time::sleep(idle_timeout * 3).await;
    assert_eq!(world.http().get(Limit::Idle), 0);
    world.endpoint.release_slow();
    let (_sender, response) = response.await.unwrap();
    let response = response.expect("the answer arrives");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"orders-v1"), "{body:?}");
    // With nothing in progress, the connection idles out.
    world.counted(Limit::Idle, 1).await;
    let _ = connection.await;
}

#[tokio::test]
async fn the_hbone_listener_applies_the_same_limits() {
    let world = World::start(limits(ServerLimits {
        tls_handshake_timeout: SHORT,
        max_connections_per_peer: 2,
        ..ServerLimits::default()
    }))
    .await;
    let hbone = world.waypoint.metrics.connection_limits("hbone");
    let mut silent: Vec<tokio::net::TcpStream> = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio::net::TcpStream::connect(world.waypoint.addr)
                .await
                .unwrap(),
        );
    }
    for stream in &mut silent {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "closed by the waypoint");
    }
    eventually("two TLS timeouts and one refusal counted", || {
        hbone.get(Limit::TlsHandshakeTimeout) == 2 && hbone.get(Limit::PerPeerLimit) == 1
    })
    .await;
    // The slots are free again: a real tunnel gets through.
    let mut tunnel = world.tunnel().await;
    send(
        &mut tunnel,
        b"GET /after HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut tunnel).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
