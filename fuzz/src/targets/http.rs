//! The waypoint's HTTP serving path: a client's raw bytes (HTTP/1.1 request heads, chunked
//! and fixed-length bodies, pipelined requests, or HTTP/2 with prior knowledge) go through
//! protocol detection and the waypoint's hyper server into its engine, with the fixture
//! mesh's config in force and in-process endpoints, on the paused clock.
//!
//! Oracle: after the client has sent everything and closed its side, the waypoint answers
//! and closes; what it writes is an HTTP/1.x response or an HTTP/2 SETTINGS frame.

use std::net::SocketAddr;
use std::sync::Arc;

use proxy_core::readiness::Readiness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::engine::{Runtime, Target as Destination};
use waypoint::transport::ConfigStore;
use waypoint::transport::detect::{self, Detected, Prefixed};
use waypoint::transport::inbound::{InboundSettings, serve_http_stream};

use super::support::{PATIENCE, paused_runtime};
use super::upstream::{caller, upstream};
use crate::mesh::mesh;
use crate::mutate::Shape;
use crate::target::Target;

/// Bytes a client sends to the waypoint.
pub const WAYPOINT_HTTP: Target = Target {
    name: "waypoint_http",
    run: waypoint_http,
    shape: Shape::Text,
    dictionary: &[
        b"\r\n",
        b"\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: ",
        b"0\r\n\r\n",
        b"ffffffffffffffff\r\n",
        b"5;ext=1\r\nhello\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"Connection: upgrade\r\nUpgrade: h2c\r\n",
        b"Host: reviews.shop:9080\r\n",
        b"end-user: jason\r\n",
        b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
        b"GET /api/v1?v=1 HTTP/1.1\r\n",
        b"POST /reviews HTTP/1.1\r\n",
        b"CONNECT 10.0.0.1:80 HTTP/1.1\r\n",
        b"http://reviews/",
        b"HTTP/1.0",
        b"/fail",
        b"/reset",
    ],
    max_len: 16 * 1024,
};

/// The waypoint of the fixture mesh serves the reviews service on this VIP and port.
fn destination() -> Destination {
    Destination {
        address: SocketAddr::from(([10, 96, 0, 10], 9080)),
    }
}

/// A config store holding the fixture mesh's waypoint config (compiled afresh, so no state
/// such as rate-limit tokens carries over from another input).
fn config_store() -> Arc<ConfigStore> {
    let store = ConfigStore::new("shop", "waypoint", Runtime::new(), &Readiness::new())
        .expect("the empty config compiles");
    let (_, config) = mesh()
        .waypoints
        .iter()
        .find(|(name, _)| name == "shop/waypoint")
        .expect("the fixture mesh has the shop/waypoint config");
    store
        .install(config.clone())
        .expect("the fixture mesh's config compiles");
    store
}

/// Serves `data` as one client connection.
pub fn waypoint_http(data: &[u8]) {
    paused_runtime().block_on(async {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let settings = InboundSettings::default();
        let serve = async {
            let mut prefix = Vec::new();
            let detected = tokio::time::timeout(
                settings.header_read_timeout,
                detect::detect(&mut server, &mut prefix),
            )
            .await;
            let http2 = match detected {
                Ok(Ok(Detected::Http2)) => true,
                Ok(Ok(Detected::Http1 | Detected::Opaque)) => false,
                _ => return,
            };
            let stream = Prefixed::new(prefix, server);
            let store = config_store();
            serve_http_stream(
                store,
                upstream(),
                &settings,
                stream,
                http2,
                (caller(), destination()),
            )
            .await;
        };
        let talk = async {
            let (mut rx, mut tx) = tokio::io::split(client);
            let send = async {
                let _ = tx.write_all(data).await;
                let _ = tx.shutdown().await;
            };
            let receive = async {
                let mut answer = Vec::new();
                let _ = rx.read_to_end(&mut answer).await;
                answer
            };
            tokio::join!(send, receive).1
        };
        let answer = tokio::time::timeout(PATIENCE, async { tokio::join!(serve, talk).1 })
            .await
            .expect("the waypoint neither answered nor closed the connection");
        check_answer(data, &answer);
    });
}

/// What the waypoint writes first: an HTTP/1.1 status line, or (to an HTTP/2 client) its
/// SETTINGS frame.
fn check_answer(sent: &[u8], answer: &[u8]) {
    if answer.is_empty() {
        return;
    }
    if sent.starts_with(detect::H2_PREFACE) {
        assert!(
            answer.len() >= 9 && answer[3] == 4,
            "the first HTTP/2 frame is not SETTINGS"
        );
    } else {
        assert!(
            answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
            "not an HTTP/1.x response: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(64)])
        );
    }
}
