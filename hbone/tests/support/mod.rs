//! A small HBONE world on loopback: a CA, workload certificates, an upstream app and an HBONE
//! server whose handler forwards each tunnel to its `:authority`, as a ztunnel inbound does.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hbone::{
    Authority, ConnectHandler, DrainReport, Identity, IncomingConnect, LimitCounters, Server,
    ServerLimits, Upstream, WorkloadCertificate,
};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TRUST_DOMAIN: &str = "cluster.local";
const CERT_TTL: Duration = Duration::from_secs(3600);

pub fn identity(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).expect("valid identity")
}

/// An upstream at `address` expected to present `cert`'s identity.
pub fn upstream_to(address: SocketAddr, cert: &WorkloadCertificate) -> Upstream {
    Upstream {
        address,
        identities: vec![cert.identity().clone()],
        source_ip: None,
    }
}

/// A CA with a client and a server workload certificate.
pub struct Certs {
    pub ca: Authority,
    pub client: Arc<WorkloadCertificate>,
    pub server: Arc<WorkloadCertificate>,
}

impl Certs {
    pub fn new() -> Self {
        let ca = Authority::generate_root(TRUST_DOMAIN, CERT_TTL).expect("root");
        let client = Arc::new(
            ca.issue(&identity("shop", "frontend"), CERT_TTL)
                .expect("client cert"),
        );
        let server = Arc::new(
            ca.issue(&identity("shop", "orders"), CERT_TTL)
                .expect("server cert"),
        );
        Self { ca, client, server }
    }
}

/// What the forwarding handler saw.
#[derive(Default)]
pub struct Seen {
    pub connects: AtomicUsize,
    pub peers: Mutex<Vec<SocketAddr>>,
    pub identities: Mutex<Vec<Identity>>,
    pub headers: Mutex<Vec<http::HeaderMap>>,
}

/// Forwards each tunnel to its authority, or answers a fixed status when `deny` is set.
pub struct Forwarder {
    pub seen: Arc<Seen>,
    pub deny: Option<StatusCode>,
}

impl ConnectHandler for Forwarder {
    async fn handle(&self, connect: IncomingConnect) {
        self.seen.connects.fetch_add(1, Ordering::SeqCst);
        self.seen.peers.lock().unwrap().push(connect.peer_addr);
        self.seen
            .identities
            .lock()
            .unwrap()
            .push(connect.peer_identity.clone());
        self.seen
            .headers
            .lock()
            .unwrap()
            .push(connect.headers.clone());
        if let Some(status) = self.deny {
            connect.reject(status);
            return;
        }
        // Connect upstream before answering: 200 means the destination is really there.
        let upstream = match TcpStream::connect(connect.authority).await {
            Ok(s) => s,
            Err(_) => return connect.reject(StatusCode::SERVICE_UNAVAILABLE),
        };
        let Ok(mut tunnel) = connect.accept() else {
            return;
        };
        let mut upstream = upstream;
        let _ = tokio::io::copy_bidirectional(&mut tunnel, &mut upstream).await;
    }
}

/// A running HBONE server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    /// Connections the server's limits ended.
    pub counters: Arc<LimitCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<DrainReport>,
}

impl TestServer {
    pub async fn start(cert: &WorkloadCertificate, deny: Option<StatusCode>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, cert, deny, Duration::from_secs(5))
    }

    pub fn start_on(
        listener: TcpListener,
        cert: &WorkloadCertificate,
        deny: Option<StatusCode>,
        drain_deadline: Duration,
    ) -> Self {
        Self::start_limited(
            listener,
            cert,
            deny,
            drain_deadline,
            ServerLimits::default(),
        )
    }

    /// A forwarding server on `listener` that puts `limits` on its peers.
    pub fn start_limited(
        listener: TcpListener,
        cert: &WorkloadCertificate,
        deny: Option<StatusCode>,
        drain_deadline: Duration,
        limits: ServerLimits,
    ) -> Self {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let tls = Arc::new(hbone::tls::server_config(cert).expect("server config"));
        let handler = Forwarder {
            seen: seen.clone(),
            deny,
        };
        let counters = LimitCounters::new();
        let (server, _updater) =
            Server::with_limits(tls, handler, drain_deadline, limits, counters.clone());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            seen,
            counters,
            stop: Some(stop),
            task,
        }
    }

    /// Starts draining and returns a handle that completes with the drain report.
    pub fn drain(mut self) -> JoinHandle<DrainReport> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
    }
}

/// An upstream app that echoes every byte and, once the client half-closes, writes a trailer
/// with the byte count before closing: proof that the half-close travelled end to end.
pub async fn echo_with_trailer() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total += n;
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = conn.write_all(format!("<done {total}>").as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// An upstream app that verifies a stream of [`pattern`] bytes as it arrives and, at EOF,
/// answers `ok <count>` or `bad at <offset>`.
pub async fn pattern_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let pattern = pattern();
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                let mut bad = None;
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let offset = total % PATTERN_PERIOD;
                            if bad.is_none() && buf[..n] != pattern[offset..offset + n] {
                                bad = Some(total);
                            }
                            total += n;
                        }
                    }
                }
                let reply = match bad {
                    None => format!("ok {total}"),
                    Some(at) => format!("bad at {at}"),
                };
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr
}

/// Period of the test pattern: a prime, so it never aligns with buffer or frame sizes.
pub const PATTERN_PERIOD: usize = 251;
/// Longest slice of the pattern ever compared or written at once.
pub const PATTERN_CHUNK: usize = 256 * 1024;

/// `PATTERN_PERIOD + PATTERN_CHUNK` bytes of a repeating pattern: any window of up to
/// `PATTERN_CHUNK` bytes starting within the first period is available as one slice, so
/// checking is a plain (fast) slice comparison.
pub fn pattern() -> Vec<u8> {
    (0..PATTERN_PERIOD + PATTERN_CHUNK)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect()
}
