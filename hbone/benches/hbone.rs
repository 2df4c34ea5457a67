//! HBONE against plain TCP on loopback, measured in the same run.
//!
//! `cargo bench -p hbone` prints, for each path, the throughput of one bulk stream and the
//! round-trip latency of 1-byte ping-pongs, then the HBONE/direct ratios.
//! Sizes can be changed with `HBONE_BENCH_BYTES` and `HBONE_BENCH_ROUND_TRIPS`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hbone::{ConnectRequest, Pool, Upstream};
use support::{
    Certs, PATTERN_CHUNK, PATTERN_PERIOD, TestServer, echo_with_trailer, pattern, pattern_sink,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `len` bytes and waits for the sink's verdict; returns the elapsed time.
async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, len: usize) -> Duration {
    let pattern = pattern();
    let start = Instant::now();
    let mut sent = 0;
    while sent < len {
        let offset = sent % PATTERN_PERIOD;
        let n = (len - sent).min(PATTERN_CHUNK);
        stream
            .write_all(&pattern[offset..offset + n])
            .await
            .expect("write");
        sent += n;
    }
    stream.shutdown().await.expect("shutdown");
    let mut verdict = String::new();
    stream.read_to_string(&mut verdict).await.expect("verdict");
    let elapsed = start.elapsed();
    assert_eq!(verdict, format!("ok {len}"), "data arrived intact");
    elapsed
}

/// 1-byte request, 1-byte reply, `rounds` times; returns each round trip.
async fn ping_pong<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    rounds: usize,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    let mut byte = [0u8; 1];
    for i in 0..rounds {
        let start = Instant::now();
        stream.write_all(&[i as u8]).await.expect("write");
        stream.read_exact(&mut byte).await.expect("read");
        samples.push(start.elapsed());
    }
    samples
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct PathResult {
    gbit_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn report(name: &str, bytes: usize, elapsed: Duration, mut samples: Vec<Duration>) -> PathResult {
    samples.sort();
    let gbit_per_s = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9;
    let result = PathResult {
        gbit_per_s,
        p50: percentile(&samples, 50.0),
        p99: percentile(&samples, 99.0),
    };
    println!(
        "{name:<8} bulk {:>7.2} Gbit/s   round trip p50 {:>7.1} µs   p99 {:>7.1} µs",
        result.gbit_per_s,
        result.p50.as_secs_f64() * 1e6,
        result.p99.as_secs_f64() * 1e6,
    );
    result
}

async fn tunnel(
    pool: &Pool,
    certs: &Certs,
    server: &TestServer,
    target: SocketAddr,
) -> hbone::TunnelStream {
    let upstream = Upstream {
        address: server.addr,
        identities: vec![certs.server.identity().clone()],
        source_ip: None,
    };
    pool.connect(&certs.client, &upstream, &ConnectRequest::new(target))
        .await
        .expect("tunnel")
}

async fn run(bytes: usize, rounds: usize) {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let sink = pattern_sink().await;
    let echo = echo_with_trailer().await;
    let pool = Pool::default();

    println!(
        "HBONE vs direct TCP on loopback: {} MiB bulk, {rounds} 1-byte round trips",
        bytes >> 20
    );
    // Warm up both paths (connection setup, allocator, CPU frequency).
    bulk(TcpStream::connect(sink).await.expect("connect"), 64 << 20).await;
    bulk(tunnel(&pool, &certs, &server, sink).await, 64 << 20).await;

    let direct_bulk = bulk(TcpStream::connect(sink).await.expect("connect"), bytes).await;
    let direct_rtt = ping_pong(connect_nodelay(echo).await, rounds).await;
    let direct = report("direct", bytes, direct_bulk, direct_rtt);

    let hbone_bulk = bulk(tunnel(&pool, &certs, &server, sink).await, bytes).await;
    let hbone_rtt = ping_pong(tunnel(&pool, &certs, &server, echo).await, rounds).await;
    let hbone = report("hbone", bytes, hbone_bulk, hbone_rtt);

    println!(
        "ratio    throughput {:.2}x of direct   p50 {:.2}x   p99 {:.2}x",
        hbone.gbit_per_s / direct.gbit_per_s,
        hbone.p50.as_secs_f64() / direct.p50.as_secs_f64(),
        hbone.p99.as_secs_f64() / direct.p99.as_secs_f64(),
    );
}

async fn connect_nodelay(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then a short run
    // only checks that both paths work.
    let full = std::env::args().any(|a| a == "--bench");
    let bytes = env_or("HBONE_BENCH_BYTES", if full { 2 << 30 } else { 64 << 20 });
    let rounds = env_or("HBONE_BENCH_ROUND_TRIPS", if full { 20_000 } else { 200 });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(bytes, rounds));
}
