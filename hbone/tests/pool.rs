//! Pool housekeeping: idle connections are released, dead peers are detected by PING.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hbone::{ConnectRequest, Pool, PoolSettings, Upstream};
use support::{Certs, TestServer, echo_with_trailer, upstream_to};
use test_support::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn quick_config() -> PoolSettings {
    PoolSettings {
        idle_timeout: Duration::from_millis(100),
        keepalive_interval: Duration::from_millis(50),
        keepalive_timeout: Duration::from_millis(300),
        ..PoolSettings::default()
    }
}

async fn round_trip(pool: &Pool, certs: &Certs, upstream: &Upstream, app: SocketAddr) {
    let mut tunnel = pool
        .connect(&certs.client, upstream, &ConnectRequest::new(app))
        .await
        .expect("tunnel");
    tunnel.write_all(b"ping").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut reply = String::new();
    tunnel.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "ping<done 4>");
}

#[tokio::test]
async fn idle_connections_are_released_and_redialed_on_demand() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let upstream = upstream_to(server.addr, &certs.server);
    let pool = Pool::new(quick_config());
    round_trip(&pool, &certs, &upstream, app).await;
    assert_eq!(pool.connection_count(), 1);
    eventually("the idle connection to close", || {
        pool.connection_count() == 0
    })
    .await;
    round_trip(&pool, &certs, &upstream, app).await;
    let peers = server.seen.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 2);
    assert_ne!(
        peers[0], peers[1],
        "the second tunnel needed a new connection"
    );
}

#[tokio::test]
async fn after_a_burst_surplus_connections_close_first_and_one_stays_warm() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let upstream = upstream_to(server.addr, &certs.server);
    let pool = Pool::new(PoolSettings {
        max_streams_per_connection: 2,
        idle_timeout: Duration::from_secs(3600),
        surplus_idle_timeout: Duration::from_millis(100),
        keepalive_interval: Duration::from_millis(50),
        ..PoolSettings::default()
    });
    // Five tunnels at once need three connections of two streams each.
    let mut tunnels = Vec::new();
    for _ in 0..5 {
        let tunnel = pool
            .connect(&certs.client, &upstream, &ConnectRequest::new(app))
            .await
            .expect("tunnel");
        tunnels.push(tunnel);
    }
    assert_eq!(pool.connection_count(), 3);
    drop(tunnels);
    eventually("the surplus connections to close", || {
        pool.connection_count() == 1
    })
    .await;
    // The last one is kept for the full idle timeout, and serves the next tunnel.
    round_trip(&pool, &certs, &upstream, app).await;
    assert_eq!(pool.connection_count(), 1);
    let peers = server.seen.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 6, "one CONNECT per tunnel");
    assert!(
        peers[..5].contains(&peers[5]),
        "the last tunnel rode a connection of the burst"
    );
}

/// A TCP relay whose existing connections can be frozen: bytes stop flowing but nothing is
/// closed, as when a peer's machine vanishes.
async fn freezable_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            let born_frozen = flag.load(Ordering::SeqCst);
            tokio::spawn(pump(ri, wo, flag.clone(), born_frozen));
            tokio::spawn(pump(ro, wi, flag.clone(), born_frozen));
        }
    });
    (addr, frozen)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    born_frozen: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Connections made before the freeze go silent; later ones flow normally.
        if frozen.load(Ordering::SeqCst) && !born_frozen {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let (relay, frozen) = freezable_relay(server.addr).await;
    let upstream = upstream_to(relay, &certs.server);
    let pool = Pool::new(PoolSettings {
        // Only the failed PING may close the connection here.
        idle_timeout: Duration::from_secs(3600),
        ..quick_config()
    });
    let mut held = pool
        .connect(&certs.client, &upstream, &ConnectRequest::new(app))
        .await
        .unwrap();
    held.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    held.read_exact(&mut byte).await.unwrap();

    frozen.store(true, Ordering::SeqCst);
    eventually("the silent connection to be dropped", || {
        pool.connection_count() == 0
    })
    .await;
    let mut rest = Vec::new();
    assert!(
        held.read_to_end(&mut rest).await.is_err() || rest.is_empty(),
        "the stream on the dead connection ends"
    );
    // A new tunnel dials afresh and works.
    round_trip(&pool, &certs, &upstream, app).await;
}
