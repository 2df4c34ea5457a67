//! Replacing a node proxy under load, as a surging DaemonSet update does: `meshctl restart
//! ztunnel --node N` starts the new ztunnel beside the old one, waits until it is ready and
//! serves every pod, then lets the old one drain. A steady stream of new connections from a
//! pod on node2 to a pod on node1, and slow requests kept in flight, cross the replacement of
//! the server's node proxy (inbound HBONE), then of the client's (outbound); none may fail.
//!
//! The client runs in the test, its sockets created inside the client pod's network namespace
//! (so the pod's redirection captures them), rather than through `meshctl exec`: a restart
//! holds the sandbox's lock until the new proxy took over, and every `exec` takes that lock,
//! so requests started through it would pause exactly when they matter.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use e2e::manifests::{echo_pod, idle_pod};
use e2e::mesh::{in_netns, wait_captured, ztunnel_metrics, ztunnel_pid};
use e2e::metrics::metric_sum;
use e2e::{Component, Options, SETTLE, Sandbox, eventually, process_exited};
use test_support::manifests::namespace;

use super::{APP_PORT, up_with};

/// Where the server runs (its node proxy takes inbound HBONE).
const SERVER_NODE: &str = "node1";
/// Where the client runs (its node proxy opens the HBONE connections).
const CLIENT_NODE: &str = "node2";
/// Workers each opening one new connection per request, one request at a time.
const SHORT_WORKERS: usize = 3;
/// Workers each keeping one slow request in flight at all times: enough that some started
/// before the new proxy bound its listeners, on the old one, when it is told to drain.
const SLOW_WORKERS: usize = 4;
/// How long the server holds each slow request: long enough that some are always in flight
/// when the old proxy is told to drain.
const SLOW_MS: u64 = 3000;
/// Pause between a short worker's requests.
const SHORT_PAUSE: Duration = Duration::from_millis(20);
/// Bound on connecting, and on any one read or write of a request.
const IO_TIMEOUT: Duration = Duration::from_secs(15);
/// Failures described in full (the count covers the rest).
const DESCRIBED: usize = 20;

/// An ambient server on [`SERVER_NODE`] and an ambient client on [`CLIENT_NODE`].
fn manifests() -> String {
    namespace("mesh", true)
        + &echo_pod("mesh", "server", SERVER_NODE, APP_PORT)
        + &idle_pod("mesh", "client", CLIENT_NODE, "default")
}

/// Requests that succeeded and those that did not (the first few described).
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    described: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut described = self.described.lock().unwrap_or_else(|e| e.into_inner());
                if described.len() < DESCRIBED {
                    described.push(why);
                }
            }
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn failures(&self) -> (u64, Vec<String>) {
        let described = self.described.lock().unwrap_or_else(|e| e.into_inner());
        (self.failed.load(Ordering::Relaxed), described.clone())
    }
}

/// Sets the flag when dropped, so the workers stop even when an assertion fails mid-scope.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One HTTP/1.1 GET of `path` on a new connection made from inside the pod namespace
/// `netns`; Ok once the whole answer arrived with status 200.
fn get(netns: &Path, server: SocketAddr, path: &str) -> Result<(), String> {
    let mut stream = in_netns(netns, || TcpStream::connect_timeout(&server, IO_TIMEOUT))
        .map_err(|e| format!("entering the client's namespace: {e}"))?
        .map_err(|e| format!("{path}: connect: {e}"))?;
    let io = |e: std::io::Error| format!("{path}: {e}");
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if status.starts_with("HTTP/1.1 200") && answer.contains("\r\n\r\n{") {
        Ok(())
    } else {
        Err(format!("{path}: answered {status:?}"))
    }
}

/// Runs `meshctl restart ztunnel --node <node>` while short and slow requests flow from the
/// client to the server, and checks that none failed, that slow requests were in flight
/// throughout, and that the old process is gone.
fn restart_under_load(sb: &Sandbox, node: &str, client: &Path, server: SocketAddr) {
    let old = ztunnel_pid(sb, node).expect("ztunnel running");
    let (short, slow) = (Tally::default(), Tally::default());
    let stop = AtomicBool::new(false);
    let slow_path = format!("/slow?latency_ms={SLOW_MS}");
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for _ in 0..SHORT_WORKERS {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    short.record(get(client, server, "/short"));
                    std::thread::sleep(SHORT_PAUSE);
                }
            });
        }
        for _ in 0..SLOW_WORKERS {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    slow.record(get(client, server, &slow_path));
                }
            });
        }
        assert!(
            eventually(SETTLE, || short.ok() >= 20 && slow.ok() >= 1),
            "the load runs before the restart ({:?}, {:?})",
            short.failures(),
            slow.failures()
        );
        let (short_before, slow_before) = (short.ok(), slow.ok());
        let started = std::time::Instant::now();
        sb.restart(&Component::Ztunnel(node.into()))
            .expect("meshctl restart ztunnel");
        // Reported, never asserted: takeover plus the old one's drain.
        eprintln!(
            "meshctl restart ztunnel --node {node}: {:?}",
            started.elapsed()
        );
        // The load carries on through the new proxy alone for a while.
        let short_restarted = short.ok();
        assert!(
            eventually(SETTLE, || short.ok() >= short_restarted + 20),
            "requests flow after the restart"
        );
        assert!(
            slow.ok() > slow_before && short_restarted > short_before,
            "requests completed during the restart"
        );
    });
    // The workers have stopped: every request they started has ended.
    for (what, tally) in [("short", &short), ("slow", &slow)] {
        let (failed, described) = tally.failures();
        assert_eq!(
            failed,
            0,
            "{what} requests failed across the restart of {node}'s ztunnel ({} succeeded): \
             {described:#?}",
            tally.ok()
        );
    }
    eprintln!(
        "restart of {node}'s ztunnel: {} short and {} slow requests, none failed",
        short.ok(),
        slow.ok()
    );
    assert!(process_exited(old), "the old ztunnel (pid {old}) exited");
    let new = ztunnel_pid(sb, node).expect("a ztunnel recorded");
    assert_ne!(new, old, "state.json records the new ztunnel");
    // The new process runs on: every drain in the log is the old one's.
    let log = sb.logs(&Component::Ztunnel(node.into())).unwrap();
    assert!(
        drained_connections(&log) > 0,
        "the old ztunnel drained live connections, which then completed:\n{log}"
    );
}

/// The most live connections a pod proxy had when it started draining, from a ztunnel log.
fn drained_connections(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("pod proxy draining"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("connections=")?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// `net.ipv4.tcp_migrate_req` inside the namespace `netns`.
fn migrate_requests(netns: &Path) -> Option<String> {
    in_netns(netns, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
            .ok()
            .map(|v| v.trim().to_string())
    })
    .expect("entering a pod's namespace")
}

/// Connections the node's (now only, new) ztunnel opened, from its `/metrics`.
fn connections_opened(sb: &Sandbox, node: &str) -> f64 {
    ztunnel_metrics(sb, node).map_or(0.0, |text| {
        metric_sum(&text, "istio_tcp_connections_opened_total", &[])
    })
}

#[test]
fn restarting_ztunnel_fails_no_connection_and_cuts_no_request() {
    let sb = up_with(&manifests(), Options::default());
    wait_captured(&sb, SERVER_NODE, &["mesh/server"]);
    wait_captured(&sb, CLIENT_NODE, &["mesh/client"]);
    let server = SocketAddr::from((sb.pod_ip("server").unwrap(), APP_PORT));
    let client = sb.netns_path("mesh.client");
    assert!(
        eventually(SETTLE, || get(&client, server, "/warm").is_ok()),
        "the captured client reaches the captured server"
    );
    // Kernels before 5.14 have no such switch (the agent says so in its log).
    let kernel_can_migrate = Path::new("/proc/sys/net/ipv4/tcp_migrate_req").exists();
    for pod in ["mesh.server", "mesh.client"]
        .into_iter()
        .filter(|_| kernel_can_migrate)
    {
        assert_eq!(
            migrate_requests(&sb.netns_path(pod)).as_deref(),
            Some("1"),
            "the node agent lets {pod}'s kernel move queued connections to a successor"
        );
    }
    // The server's side (inbound HBONE), then the client's (outbound, HBONE pool).
    for node in [SERVER_NODE, CLIENT_NODE] {
        restart_under_load(&sb, node, &client, server);
        // Only the new process answers now: what it counts, it carried.
        assert!(
            connections_opened(&sb, node) > 0.0,
            "the new ztunnel on {node} carries the traffic"
        );
    }
    wait_captured(&sb, SERVER_NODE, &["mesh/server"]);
    wait_captured(&sb, CLIENT_NODE, &["mesh/client"]);
}

/// Pids of the `ztunnel proxy` processes running in `node`'s network namespace.
fn proxies_on(sb: &Sandbox, node: &str) -> Vec<i32> {
    let netns = format!("{}{node}", sb.netns_prefix());
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .filter(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = argv.split(|b| *b == 0).collect();
            argv.len() > 1 && argv[0].ends_with(b"/ztunnel") && argv[1] == b"proxy"
        })
        .collect()
}

#[test]
fn a_successor_that_never_gets_ready_is_stopped_and_the_old_ztunnel_serves_on() {
    let sb = up_with(&manifests(), Options::default());
    wait_captured(&sb, SERVER_NODE, &["mesh/server"]);
    let server = SocketAddr::from((sb.pod_ip("server").unwrap(), APP_PORT));
    let client = sb.netns_path("mesh.client");
    assert!(
        eventually(SETTLE, || get(&client, server, "/warm").is_ok()),
        "the captured client reaches the captured server"
    );
    let old = ztunnel_pid(&sb, SERVER_NODE).expect("ztunnel running");
    // Without the controller a new ztunnel gets no config and never reports ready; the one
    // running keeps what it has.
    sb.stop(&Component::Controller).unwrap();
    let restarted = sb.restart(&Component::Ztunnel(SERVER_NODE.into()));
    assert!(
        restarted.is_err(),
        "the restart reports the failed takeover"
    );
    assert_eq!(
        ztunnel_pid(&sb, SERVER_NODE),
        Some(old),
        "state.json still records the old ztunnel"
    );
    assert_eq!(
        proxies_on(&sb, SERVER_NODE),
        [old],
        "the successor was stopped, the old ztunnel runs"
    );
    get(&client, server, "/still").expect("the old ztunnel still carries the traffic");
}
