//! The HBONE server's limits against peers that hold connections open, over real loopback
//! sockets and real TLS, with the HTTP/2 bytes written by hand. Each test shortens only the
//! limit it is about; the steps before it run under the defaults.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hbone::frames::wire::{
    CONTINUATION, END_HEADERS, HEADERS, PREFACE, RST_STREAM, SETTINGS, encode as frame,
    goaway_codes,
};
use hbone::{ConnectRequest, Limit, Pool, ServerLimits, Upstream};
use rustls_pki_types::ServerName;
use support::{Certs, TestServer, echo_with_trailer};
use test_support::wait::eventually;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const ENHANCE_YOUR_CALM: u32 = 0xb;
const CANCEL: u32 = 0x8;
/// Short enough for a quick test, long next to anything a loopback handshake needs.
const SHORT: Duration = Duration::from_millis(300);

async fn server(limits: ServerLimits) -> (Certs, TestServer) {
    let certs = Certs::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TestServer::start_limited(
        listener,
        &certs.server,
        None,
        Duration::from_secs(5),
        limits,
    );
    (certs, server)
}

/// The preface and an empty SETTINGS frame: an HTTP/2 client's opening.
fn opening() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// An HPACK block for `CONNECT 127.0.0.1:9` (literal values with indexed names).
fn connect_block() -> Vec<u8> {
    let mut block = vec![0x02, 7];
    block.extend_from_slice(b"CONNECT");
    block.extend_from_slice(&[0x01, 11]);
    block.extend_from_slice(b"127.0.0.1:9");
    block
}

/// TCP and a finished mTLS handshake with the client's certificate, as a peer ztunnel.
async fn tls_client(
    certs: &Certs,
    server: &TestServer,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = hbone::tls::client_config(&certs.client, &[certs.server.identity().clone()])
        .expect("client config");
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(server.addr.ip().into()), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the server closes; what it sent. A reset counts as closed.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The bound only keeps a broken server from hanging the test.
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the server closes the connection");
    seen
}

async fn counted(server: &TestServer, limit: Limit, want: u64) {
    eventually(&format!("{want} counted as {limit}"), || {
        server.counters.get(limit) == want
    })
    .await;
}

#[tokio::test]
async fn a_peer_that_never_finishes_tls_is_closed_and_counted() {
    let (certs, server) = server(ServerLimits {
        tls_handshake_timeout: SHORT,
        ..ServerLimits::default()
    })
    .await;
    // One peer sends nothing at all; another only its ClientHello.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut hello_only = TcpStream::connect(server.addr).await.unwrap();
    let config = hbone::tls::client_config(&certs.client, &[certs.server.identity().clone()])
        .expect("client config");
    let name = ServerName::IpAddress(server.addr.ip().into());
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello_only.write_all(&hello).await.unwrap();

    read_until_closed(&mut silent).await;
    let answer = read_until_closed(&mut hello_only).await;
    assert!(!answer.is_empty(), "the server did answer the ClientHello");
    counted(&server, Limit::TlsHandshakeTimeout, 2).await;
    assert_eq!(
        server
            .seen
            .connects
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn tls_without_the_http2_preface_or_settings_is_closed_and_counted() {
    let (certs, server) = server(ServerLimits {
        http2_handshake_timeout: SHORT,
        ..ServerLimits::default()
    })
    .await;
    let mut mute = tls_client(&certs, &server).await;
    let mut preface_only = tls_client(&certs, &server).await;
    preface_only.write_all(PREFACE).await.unwrap();
    preface_only.flush().await.unwrap();

    read_until_closed(&mut mute).await;
    read_until_closed(&mut preface_only).await;
    counted(&server, Limit::Http2HandshakeTimeout, 2).await;
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_and_is_closed() {
    let (certs, server) = server(ServerLimits {
        idle_timeout: SHORT,
        ..ServerLimits::default()
    })
    .await;
    let mut idle = tls_client(&certs, &server).await;
    idle.write_all(&opening()).await.unwrap();
    idle.flush().await.unwrap();
    // We never answer the GOAWAY's PING, so the server cuts the connection itself.
    let sent = read_until_closed(&mut idle).await;
    assert_eq!(
        goaway_codes(&sent),
        [0],
        "a graceful GOAWAY (NO_ERROR) first"
    );
    counted(&server, Limit::Idle, 1).await;
}

#[tokio::test]
async fn a_header_block_that_never_ends_is_closed_and_counted() {
    let (certs, server) = server(ServerLimits {
        header_block_timeout: SHORT,
        ..ServerLimits::default()
    })
    .await;
    let mut stalled = tls_client(&certs, &server).await;
    let mut bytes = opening();
    let block = connect_block();
    bytes.extend(frame(HEADERS, 0, 1, &block[..5]));
    bytes.extend(frame(CONTINUATION, 0, 1, &block[5..9]));
    stalled.write_all(&bytes).await.unwrap();
    stalled.flush().await.unwrap();

    read_until_closed(&mut stalled).await;
    counted(&server, Limit::HeaderTimeout, 1).await;
    assert_eq!(server.counters.get(Limit::Idle), 0);
}

#[tokio::test]
async fn a_continuation_flood_is_cut_at_the_header_block_bound() {
    let limits = ServerLimits {
        max_header_list_size: 1024,
        ..ServerLimits::default()
    };
    let bound = limits.max_header_block_bytes();
    let (certs, server) = server(limits).await;
    let mut flood = tls_client(&certs, &server).await;
    let mut bytes = opening();
    bytes.extend(frame(HEADERS, 0, 1, &connect_block()));
    // Literal bytes the decoder would have to keep: never a complete header.
    for _ in 0..(bound / 500 + 2) {
        bytes.extend(frame(CONTINUATION, 0, 1, &[b'a'; 500]));
    }
    // The server may close while we still write: that is the point.
    let _ = flood.write_all(&bytes).await;
    let _ = flood.flush().await;

    read_until_closed(&mut flood).await;
    counted(&server, Limit::HeaderTooLarge, 1).await;
}

#[tokio::test]
async fn rapid_resets_get_goaway_enhance_your_calm_and_are_counted() {
    let (certs, server) = server(ServerLimits::default()).await;
    let mut attacker = tls_client(&certs, &server).await;
    let mut bytes = opening();
    let rounds = ServerLimits::default().max_pending_accept_reset_streams as u32 * 3;
    for i in 0..rounds {
        let stream = 2 * i + 1;
        bytes.extend(frame(HEADERS, END_HEADERS, stream, &connect_block()));
        bytes.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
    }
    attacker.write_all(&bytes).await.unwrap();
    attacker.flush().await.unwrap();

    let sent = read_until_closed(&mut attacker).await;
    assert!(
        goaway_codes(&sent).contains(&ENHANCE_YOUR_CALM),
        "GOAWAY ENHANCE_YOUR_CALM, got {:?}",
        goaway_codes(&sent)
    );
    counted(&server, Limit::Http2Abuse, 1).await;
}

/// A TCP connection to `server` from `source`.
async fn connect_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(server).await
}

#[tokio::test]
async fn a_peer_at_its_cap_is_refused_while_other_peers_connect() {
    let (certs, server) = server(ServerLimits {
        max_connections_per_peer: 3,
        ..ServerLimits::default()
    })
    .await;
    let crowded: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    // Three silent connections hold the first peer's slots (the TLS deadline is 10 s).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(crowded, server.addr).await.unwrap());
    }
    // The fourth is closed at once: the others' TLS deadline is 10 s away.
    let mut fourth = connect_from(crowded, server.addr).await.unwrap();
    read_until_closed(&mut fourth).await;
    counted(&server, Limit::PerPeerLimit, 1).await;

    let app = echo_with_trailer().await;
    let tunnel = |source: IpAddr| {
        let upstream = Upstream {
            address: server.addr,
            identities: vec![certs.server.identity().clone()],
            source_ip: Some(source),
        };
        let client = certs.client.clone();
        async move {
            let mut tunnel = Pool::default()
                .connect(&client, &upstream, &ConnectRequest::new(app))
                .await?;
            tunnel.write_all(b"hi").await.unwrap();
            tunnel.shutdown().await.unwrap();
            let mut reply = String::new();
            tunnel.read_to_string(&mut reply).await.unwrap();
            Ok::<_, hbone::Error>(reply)
        }
    };
    assert_eq!(
        tunnel(other).await.unwrap(),
        "hi<done 2>",
        "another peer is served"
    );

    // Once one of the first peer's connections ends, it may connect again.
    drop(held.pop());
    let mut reply = None;
    for _ in 0..100 {
        if let Ok(r) = tunnel(crowded).await {
            reply = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reply.as_deref(), Some("hi<done 2>"));
    assert_eq!(server.counters.get(Limit::TlsHandshakeTimeout), 0);
}

#[tokio::test]
async fn a_connection_with_a_live_tunnel_outlasts_the_idle_timeout() {
    let idle_timeout = Duration::from_secs(1);
    let (certs, server) = server(ServerLimits {
        idle_timeout,
        ..ServerLimits::default()
    })
    .await;
    let app = echo_with_trailer().await;
    let upstream = Upstream {
        address: server.addr,
        identities: vec![certs.server.identity().clone()],
        source_ip: None,
    };
    let pool = Pool::default();
    let mut tunnel = pool
        .connect(&certs.client, &upstream, &ConnectRequest::new(app))
        .await
        .unwrap();
    tunnel.write_all(b"before ").await.unwrap();
    // (A connection idled out before its first tunnel, on a starved machine, counts here.)
    let before = server.counters.get(Limit::Idle);
    // Several idle timeouts pass with the tunnel open but silent.
    tokio::time::sleep(idle_timeout * 3).await;
    assert_eq!(server.counters.get(Limit::Idle), before);
    tunnel.write_all(b"after").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut reply = String::new();
    tunnel.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "before after<done 12>");
    drop(tunnel);
    // Without its tunnel, the connection is idle and goes.
    counted(&server, Limit::Idle, before + 1).await;
}

/// Keeps the HTTP/2 helpers honest: a well-formed client opening passes every limit.
#[tokio::test]
async fn a_hand_written_connect_is_served() {
    let (certs, server) = server(ServerLimits::default()).await;
    let mut client = tls_client(&certs, &server).await;
    let mut bytes = opening();
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &connect_block()));
    client.write_all(&bytes).await.unwrap();
    client.flush().await.unwrap();
    eventually("the CONNECT reaches the handler", || {
        server
            .seen
            .connects
            .load(std::sync::atomic::Ordering::SeqCst)
            == 1
    })
    .await;
    assert_eq!(server.counters.get(Limit::Http2HandshakeTimeout), 0);
}
