//! Pod to pod directly against pod to pod through two ztunnels (outbound on node1, HBONE across
//! the fabric, inbound on node2), in one sandbox and one run.
//!
//! `cargo build --release -p meshctl -p controller -p ztunnel && cargo bench -p e2e --bench ztunnel`
//!
//! The sandbox holds a client (node1) and a server (node2) in a plain namespace and the same
//! pair in an ambient one. The benchmark's own threads play the apps: a thread that has
//! entered a pod's network namespace creates its sockets there, so its traffic is captured
//! exactly as an app's would be. Measured for each path:
//!
//! - bulk: one stream of `ZTUNNEL_BENCH_BYTES` (default 1 GiB), acknowledged by the server;
//! - request/response: 64-byte requests echoed on one connection at a fixed rate
//!   (`ZTUNNEL_BENCH_RATE` per second for `ZTUNNEL_BENCH_SECS`), latency from the send, or
//!   from the scheduled time when an earlier stall delayed it;
//! - new connections: connect, 1-byte round trip, server closes, 8 at a time, for
//!   `ZTUNNEL_BENCH_SECS`;
//! - churn: `ZTUNNEL_BENCH_CHURN` connections (default 20 000), each a 1-byte round trip
//!   that the client closes first, 8 at a time: the proxy's connection to the app then closes
//!   first too, so its TIME_WAIT sockets pile up under the client's address;
//!
//! - idle connections: `ZTUNNEL_BENCH_IDLE` connections (default 5 000), each a 1-byte round
//!   trip, then held open for two seconds and closed: each ztunnel's resident memory while
//!   they are held, per connection, and `ZTUNNEL_BENCH_RELEASE_SECS` (default 30) after they
//!   closed;
//!
//! and the two ztunnels' CPU (cores busy over each phase) and resident memory, idle and under
//! load, from `/proc`, next to the CPU of the apps themselves (this process) for scale.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::manifests::idle_pod;
use e2e::measure::{ProcUsage, env_or, full_run, proc_usage};
use e2e::mesh::{wait_captured, ztunnel_pid, ztunnel_ready};
use e2e::{Options, Sandbox};
use meshctl::app::load_report::percentile;
use test_support::manifests::namespace;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The benchmark server's port in both server pods.
const PORT: u16 = 7000;
/// Request and response size of the request/response phase.
const MESSAGE: usize = 64;
/// Connections opened at once in the new-connections phase.
const CONNECT_CONCURRENCY: usize = 8;
/// Write size of the bulk phase.
const CHUNK: usize = 256 * 1024;

/// The same pair in each namespace: a client on the first node and a server on the second,
/// both idle (the benchmark's threads play the apps in their network namespaces). `direct`
/// and `mesh` on node1 → node2; with a peer node proxy, `peer` on node3 → node4, the nodes
/// that run it.
fn manifests(with_peer: bool) -> String {
    let mut pairs = vec![
        ("direct", false, "node1", "node2"),
        ("mesh", true, "node1", "node2"),
    ];
    if with_peer {
        pairs.push(("peer", true, "node3", "node4"));
    }
    pairs
        .into_iter()
        .map(|(ns, ambient, client_node, server_node)| {
            namespace(ns, ambient)
                + &idle_pod(ns, "client", client_node, "default")
                + &idle_pod(ns, "server", server_node, "default")
        })
        .collect()
}

/// Runs `work` on a new thread inside the network namespace at `netns`, on a single-threaded
/// runtime of its own. Every socket it creates lives in that namespace.
fn in_netns<T, F>(
    netns: PathBuf,
    work: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    std::thread::spawn(move || {
        let ns = File::open(&netns).unwrap_or_else(|e| panic!("{}: {e}", netns.display()));
        // SAFETY: setns on this thread only, which is dedicated to `work`.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work())
    })
}

/// The server: `B` streams are counted and acknowledged with `ok <bytes>`, `E` streams are
/// echoed, `C` streams get one byte back and are closed. Serves until the process ends.
async fn serve() {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, PORT))
        .await
        .expect("bind the benchmark server");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (mut rx, mut tx) = stream.into_split();
            let mut mode = [0u8; 1];
            if rx.read_exact(&mut mode).await.is_err() {
                return;
            }
            if mode[0] == b'H' {
                // One byte back, then wait for the client to hang up first.
                let mut byte = [0u8; 1];
                if rx.read_exact(&mut byte).await.is_ok() {
                    let _ = tx.write_all(&byte).await;
                }
                while matches!(rx.read(&mut byte).await, Ok(n) if n > 0) {}
            } else if mode[0] == b'C' {
                // One byte back, then the server closes first, as an HTTP/1.0 server does:
                // TIME_WAIT stays on this side, so clients never run short of ports.
                let mut byte = [0u8; 1];
                if rx.read_exact(&mut byte).await.is_ok() {
                    let _ = tx.write_all(&byte).await;
                }
                let _ = tx.shutdown().await;
            } else if mode[0] == b'B' {
                let mut buffer = vec![0u8; CHUNK];
                let mut total: u64 = 0;
                while let Ok(n) = rx.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                let _ = tx.write_all(format!("ok {total}").as_bytes()).await;
                let _ = tx.shutdown().await;
            } else {
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
                let _ = tx.shutdown().await;
            }
        });
    }
}

async fn connect(server: SocketAddr, mode: u8) -> TcpStream {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(&[mode]).await.expect("mode");
    stream
}

/// One stream of `bytes`; the elapsed time until the server acknowledged all of it.
async fn bulk(server: SocketAddr, bytes: u64) -> Duration {
    let start = Instant::now();
    let mut stream = connect(server, b'B').await;
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        stream.write_all(&chunk[..n]).await.expect("bulk write");
        sent += n as u64;
    }
    stream.shutdown().await.expect("bulk shutdown");
    let mut verdict = String::new();
    stream
        .read_to_string(&mut verdict)
        .await
        .expect("bulk verdict");
    assert_eq!(verdict, format!("ok {bytes}"), "every byte arrived");
    start.elapsed()
}

/// `count` echoed requests at `rate` per second on one connection. Blocking sockets and
/// thread sleeps keep the schedule to tens of microseconds (the async timer's millisecond
/// granularity would swamp the latencies). A request sent late because the previous answer
/// was late is measured from when it was due, so a stall counts for every request it delays.
fn request_response(server: SocketAddr, rate: u64, count: u64) -> Vec<Duration> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.write_all(b"E").expect("mode");
    let request = [0x42u8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut previous_done = start;
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = start + interval * i as u32;
        let behind = previous_done > due;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let sent = Instant::now();
        stream.write_all(&request).expect("request");
        stream.read_exact(&mut reply).expect("response");
        previous_done = Instant::now();
        samples.push(previous_done - if behind { due } else { sent });
    }
    samples
}

/// New connections per second: each connects, does a 1-byte round trip and waits for the
/// server to close.
async fn new_connections(server: SocketAddr, seconds: u64) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECT_CONCURRENCY {
        workers.spawn(async move {
            let mut done = 0u64;
            let mut byte = [0u8; 1];
            while Instant::now() < deadline {
                let mut stream = connect(server, b'C').await;
                stream.write_all(b"x").await.expect("write");
                stream.read_exact(&mut byte).await.expect("read");
                // Wait for the server's close, so this side never holds TIME_WAIT.
                let _ = stream.read(&mut byte).await;
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = workers.join_next().await {
        total += done.expect("connection worker");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Opens `count` connections, 8 at a time, each a 1-byte round trip the client closes first;
/// returns connections per second.
async fn churn(server: SocketAddr, count: u64) -> f64 {
    let start = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECT_CONCURRENCY {
        let next = next.clone();
        workers.spawn(async move {
            let mut byte = [0u8; 1];
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let mut stream = connect(server, b'H').await;
                stream.write_all(b"x").await.expect("write");
                stream.read_exact(&mut byte).await.expect("read");
                // Dropped here: the client hangs up first.
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("churn worker");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// Each ztunnel's resident memory (client side first), in bytes.
fn resident(ztunnels: &Ztunnels) -> Vec<u64> {
    ztunnels.sample().iter().map(|u| u.rss_bytes).collect()
}

/// Opens `count` connections from the client namespace `netns` to `server`, each carrying a
/// 1-byte round trip, holds them while `ztunnels`' memory is read, then closes them; the
/// memory read while they were open.
fn hold_idle(netns: PathBuf, server: SocketAddr, count: u64, ztunnels: &Ztunnels) -> Vec<u64> {
    let pids = ztunnels.pids.clone();
    in_netns(netns, move || async move {
        let mut held = Vec::with_capacity(count as usize);
        let mut byte = [0u8; 1];
        for _ in 0..count {
            let mut stream = connect(server, b'H').await;
            stream.write_all(b"x").await.expect("write");
            stream.read_exact(&mut byte).await.expect("read");
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = Ztunnels { pids }
            .sample()
            .iter()
            .map(|u| u.rss_bytes)
            .collect();
        drop(held);
        rss
    })
    .join()
    .expect("idle connections thread")
}

/// Memory of each ztunnel around `count` idle connections: before, while held, and
/// `release` after they closed.
struct IdleMemory {
    count: u64,
    before: Vec<u64>,
    held: Vec<u64>,
    after: Vec<u64>,
}

impl IdleMemory {
    fn measure(
        sb: &Sandbox,
        namespace: &str,
        ztunnels: &Ztunnels,
        count: u64,
        release: Duration,
    ) -> Self {
        let netns = sb.netns_path(&format!("{namespace}.client"));
        let before = resident(ztunnels);
        let held = hold_idle(netns, server_address(sb, namespace), count, ztunnels);
        std::thread::sleep(release);
        let after = resident(ztunnels);
        Self {
            count,
            before,
            held,
            after,
        }
    }

    fn print(&self, label: &str, release: Duration) {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        for (i, side) in ["client side", "server side"].iter().enumerate() {
            let grown = self.held[i].saturating_sub(self.before[i]);
            println!(
                "{label:<7} {side}: {:.1} MiB idle, {:.1} MiB with {} connections held \
                 ({:.1} KB each), {:.1} MiB {} s after they closed ({:.1}x idle)",
                mib(self.before[i]),
                mib(self.held[i]),
                self.count,
                grown as f64 / self.count as f64 / 1000.0,
                mib(self.after[i]),
                release.as_secs(),
                self.after[i] as f64 / self.before[i] as f64,
            );
        }
    }
}

/// Both ztunnels' usage.
struct Ztunnels {
    pids: Vec<i32>,
}

/// Usage of the ztunnels over one phase.
#[derive(Clone, Copy, Debug, Default)]
struct PhaseUsage {
    /// CPU cores kept busy on average (both ztunnels together).
    cores: f64,
    /// CPU seconds both ztunnels used over the phase.
    cpu_seconds: f64,
    /// Resident memory of both together at the end of the phase, in MiB.
    rss_mib: f64,
    /// CPU cores this process kept busy: the apps on both ends, with the kernel's work on
    /// their sockets.
    apps_cores: f64,
}

impl Ztunnels {
    fn sample(&self) -> Vec<ProcUsage> {
        self.pids
            .iter()
            .map(|p| proc_usage(*p).expect("ztunnel process"))
            .collect()
    }

    /// Runs `phase` and reports what the ztunnels used meanwhile.
    fn measure<T>(&self, phase: impl FnOnce() -> T) -> (T, PhaseUsage) {
        let apps = || proc_usage(std::process::id() as i32).map_or(0.0, |u| u.cpu_seconds);
        let before = self.sample();
        let apps_before = apps();
        let start = Instant::now();
        let out = phase();
        let wall = start.elapsed().as_secs_f64();
        let after = self.sample();
        let apps_after = apps();
        let cpu: f64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.cpu_seconds - b.cpu_seconds)
            .sum();
        let rss: u64 = after.iter().map(|u| u.rss_bytes).sum();
        (
            out,
            PhaseUsage {
                cores: cpu / wall,
                cpu_seconds: cpu,
                rss_mib: rss as f64 / f64::from(1 << 20),
                apps_cores: (apps_after - apps_before) / wall,
            },
        )
    }
}

struct PathResult {
    gbit_per_s: f64,
    /// Request/response latency, microseconds.
    p50_us: f64,
    p99_us: f64,
    conns_per_s: f64,
    churn_per_s: f64,
    bulk: PhaseUsage,
    rr: PhaseUsage,
    conns: PhaseUsage,
    churn: PhaseUsage,
}

/// Runs the four phases from the client pod `client` against `server`.
fn run_path(
    name: &str,
    sb: &Sandbox,
    client: &str,
    server: SocketAddr,
    settings: &Settings,
    ztunnels: &Ztunnels,
) -> PathResult {
    let client_ns = sb.netns_path(client);
    let on_client = |phase: u8| {
        let ns = client_ns.clone();
        let Settings {
            bytes,
            rate,
            seconds,
            churn_count,
        } = *settings;
        move || {
            in_netns(ns, move || async move {
                match phase {
                    0 => Phase::Bulk(bulk(server, bytes).await),
                    1 => Phase::Rr(request_response(server, rate, rate * seconds)),
                    2 => Phase::Conns(new_connections(server, seconds).await),
                    _ => Phase::Churn(churn(server, churn_count).await),
                }
            })
            .join()
            .expect("client thread")
        }
    };
    // Warm up: connection pools, certificates, caches.
    let _ = in_netns(client_ns.clone(), move || async move {
        bulk(server, 64 << 20).await;
        new_connections(server, 1).await
    })
    .join();

    let (Phase::Bulk(elapsed), bulk_usage) = ztunnels.measure(on_client(0)) else {
        unreachable!()
    };
    let (Phase::Rr(samples), rr_usage) = ztunnels.measure(on_client(1)) else {
        unreachable!()
    };
    let (Phase::Conns(conns_per_s), conns_usage) = ztunnels.measure(on_client(2)) else {
        unreachable!()
    };
    let (Phase::Churn(churn_per_s), churn_usage) = ztunnels.measure(on_client(3)) else {
        unreachable!()
    };
    let mut micros: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    micros.sort_by(f64::total_cmp);
    let result = PathResult {
        gbit_per_s: settings.bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9,
        p50_us: percentile(&micros, 50.0),
        p99_us: percentile(&micros, 99.0),
        conns_per_s,
        churn_per_s,
        bulk: bulk_usage,
        rr: rr_usage,
        conns: conns_usage,
        churn: churn_usage,
    };
    println!(
        "{name:<7} bulk {:>6.2} Gbit/s   req/resp p50 {:>7.1} µs p99 {:>7.1} µs   {:>7.0} conn/s   \
         churn {:>7.0} conn/s",
        result.gbit_per_s, result.p50_us, result.p99_us, result.conns_per_s, result.churn_per_s,
    );
    result
}

enum Phase {
    Bulk(Duration),
    Rr(Vec<Duration>),
    Conns(f64),
    Churn(f64),
}

#[derive(Clone, Copy)]
struct Settings {
    bytes: u64,
    rate: u64,
    seconds: u64,
    churn_count: u64,
}

/// The node proxy binary to measure beside the mesh's own (Istio's ztunnel), from
/// `ZTUNNEL_BENCH_PEER`.
fn peer_binary() -> Option<String> {
    std::env::var("ZTUNNEL_BENCH_PEER")
        .ok()
        .filter(|p| !p.is_empty())
}

/// The node proxies of `nodes`, once each is ready and serves its benchmark pod.
fn node_proxies(sb: &Sandbox, namespace: &str, nodes: [&str; 2]) -> Ztunnels {
    for (node, pod) in nodes.iter().zip(["client", "server"]) {
        let ready = e2e::eventually(e2e::SETTLE, || ztunnel_ready(sb, node));
        assert!(ready, "the node proxy of {node} never became ready");
        wait_captured(sb, node, &[&format!("{namespace}/{pod}")]);
    }
    Ztunnels {
        pids: nodes
            .iter()
            .map(|n| ztunnel_pid(sb, n).expect("node proxy running"))
            .collect(),
    }
}

/// The address of the server pod of `namespace`.
fn server_address(sb: &Sandbox, namespace: &str) -> SocketAddr {
    let ip = sb
        .pods()
        .expect("pods")
        .into_iter()
        .find(|p| p.namespace == namespace && p.name == "server")
        .expect("server pod")
        .ip;
    SocketAddr::from((ip, PORT))
}

/// Ratios of `path` against `direct`, and its proxies' CPU per connection and per GB.
fn print_ratios(label: &str, path: &PathResult, direct: &PathResult, settings: &Settings) {
    println!(
        "{label:<7} throughput {:.2}x of direct   p50 {:.2}x   p99 {:.2}x   conn/s {:.2}x   \
         churn {:.2}x",
        path.gbit_per_s / direct.gbit_per_s,
        path.p50_us / direct.p50_us,
        path.p99_us / direct.p99_us,
        path.conns_per_s / direct.conns_per_s,
        path.churn_per_s / direct.churn_per_s,
    );
    let per_thousand = |usage: PhaseUsage, count: f64| usage.cpu_seconds * 1000.0 / count;
    println!(
        "{label:<7} proxies' CPU (both): per GB {:.2} s, per 1000 new conns {:.3} s, \
         per 1000 churn conns {:.3} s",
        path.bulk.cpu_seconds / (settings.bytes as f64 / 1e9),
        per_thousand(path.conns, path.conns_per_s * settings.seconds as f64),
        per_thousand(path.churn, settings.churn_count as f64),
    );
}

fn main() {
    let full = full_run();
    let settings = Settings {
        bytes: env_or("ZTUNNEL_BENCH_BYTES", if full { 1 << 30 } else { 16 << 20 }),
        rate: env_or("ZTUNNEL_BENCH_RATE", if full { 1000 } else { 100 }),
        seconds: env_or("ZTUNNEL_BENCH_SECS", if full { 10 } else { 1 }),
        // Within one TIME_WAIT period, a pod's ephemeral ports (28 232 by default) bound it.
        churn_count: env_or("ZTUNNEL_BENCH_CHURN", if full { 20_000 } else { 200 }),
    };
    let idle_count = env_or("ZTUNNEL_BENCH_IDLE", if full { 5_000 } else { 100 });
    let release = Duration::from_secs(env_or(
        "ZTUNNEL_BENCH_RELEASE_SECS",
        if full { 30 } else { 0 },
    ));
    raise_open_files(4 * idle_count + 1024);
    let peer = peer_binary();
    let options = Options {
        nodes: if peer.is_some() { 4 } else { 2 },
        node_proxies: peer
            .iter()
            .flat_map(|p| [format!("node3={p}"), format!("node4={p}")])
            .collect(),
        ..Options::default()
    };
    let sb = Sandbox::up_with(&manifests(peer.is_some()), options).expect("sandbox up");
    let ztunnels = node_proxies(&sb, "mesh", ["node1", "node2"]);
    let peer_proxies = peer
        .as_ref()
        .map(|_| node_proxies(&sb, "peer", ["node3", "node4"]));
    let namespaces: &[&str] = if peer.is_some() {
        &["direct", "mesh", "peer"]
    } else {
        &["direct", "mesh"]
    };
    // The servers run until the process ends; the sandbox is torn down first, on drop.
    for ns in namespaces {
        drop(in_netns(sb.netns_path(&format!("{ns}.server")), serve));
    }

    println!(
        "pod to pod across two nodes, direct vs through two ztunnels: {} MiB bulk, \
         {} req/s for {} s, new connections for {} s, churn of {} connections",
        settings.bytes >> 20,
        settings.rate,
        settings.seconds,
        settings.seconds,
        settings.churn_count
    );
    if let Some(p) = &peer {
        println!("peer: {p} on node3 and node4 (pair node3 → node4)");
    }
    let idle_for = || std::thread::sleep(Duration::from_secs(settings.seconds));
    let ((), idle) = ztunnels.measure(idle_for);
    let run = |name: &str, ns: &str, proxies: &Ztunnels| {
        let client = format!("{ns}.client");
        run_path(
            name,
            &sb,
            &client,
            server_address(&sb, ns),
            &settings,
            proxies,
        )
    };
    let direct = run("direct", "direct", &ztunnels);
    let mesh = run("ztunnel", "mesh", &ztunnels);
    let peer_result = peer_proxies
        .as_ref()
        .map(|p| (p.measure(idle_for).1, run("peer", "peer", p)));
    let mesh_idle = IdleMemory::measure(&sb, "mesh", &ztunnels, idle_count, release);
    let peer_idle_memory = peer_proxies
        .as_ref()
        .map(|p| IdleMemory::measure(&sb, "peer", p, idle_count, release));
    print_ratios("ztunnel", &mesh, &direct, &settings);
    mesh_idle.print("ztunnel", release);
    if let Some(memory) = &peer_idle_memory {
        memory.print("peer", release);
    }
    print_comparison(idle, &direct, &mesh, peer_result.as_ref(), &settings);
}

/// The peer's ratios against direct and against ours, and the usage table of every path.
fn print_comparison(
    idle: PhaseUsage,
    direct: &PathResult,
    mesh: &PathResult,
    peer_result: Option<&(PhaseUsage, PathResult)>,
    settings: &Settings,
) {
    let mut rows = vec![
        ("idle", "ztunnel", idle),
        ("bulk", "direct", direct.bulk),
        ("bulk", "ztunnel", mesh.bulk),
        ("req/resp", "direct", direct.rr),
        ("req/resp", "ztunnel", mesh.rr),
        ("new conns", "direct", direct.conns),
        ("new conns", "ztunnel", mesh.conns),
        ("churn", "direct", direct.churn),
        ("churn", "ztunnel", mesh.churn),
    ];
    if let Some((peer_idle, peer)) = peer_result {
        print_ratios("peer", peer, direct, settings);
        println!(
            "ztunnel vs peer: throughput {:.2}x   p50 {:.2}x   p99 {:.2}x   conn/s {:.2}x   \
             churn {:.2}x   CPU per GB {:.2}x",
            mesh.gbit_per_s / peer.gbit_per_s,
            mesh.p50_us / peer.p50_us,
            mesh.p99_us / peer.p99_us,
            mesh.conns_per_s / peer.conns_per_s,
            mesh.churn_per_s / peer.churn_per_s,
            mesh.bulk.cpu_seconds / peer.bulk.cpu_seconds,
        );
        rows.extend([
            ("idle", "peer", *peer_idle),
            ("bulk", "peer", peer.bulk),
            ("req/resp", "peer", peer.rr),
            ("new conns", "peer", peer.conns),
            ("churn", "peer", peer.churn),
        ]);
    }
    print_usage(&rows);
}

/// Lets this process hold `wanted` descriptors (both ends of the idle connections), up to
/// its hard limit.
fn raise_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The table of CPU and memory per phase and path.
fn print_usage(rows: &[(&str, &str, PhaseUsage)]) {
    println!("CPU (cores busy) and memory; proxies = both nodes' node proxy processes together:");
    println!("  phase       path      proxies   proxy RSS    apps (both ends)");
    for (phase, path, usage) in rows {
        println!(
            "  {phase:<10}  {path:<8}  {:>8.2}  {:>7.1} MiB  {:>13.2}",
            usage.cores, usage.rss_mib, usage.apps_cores
        );
    }
}
