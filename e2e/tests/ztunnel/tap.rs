//! `meshctl tap` on L4-only workloads (no waypoint): the ztunnels' connection events, exact
//! for the connections a test makes (both identities, mutual TLS, the bytes each way), a
//! denied connection as one event naming its policy, and a tap client that never reads
//! costing counted drops, not traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::process::Child;
use std::time::Duration;

use e2e::manifests::{echo_pod, idle_pod, service_account, tcp_echo_pod};
use e2e::mesh::{active_connections, in_netns, wait_captured, ztunnel_metrics};
use e2e::metrics::metric_sum;
use e2e::{SETTLE, Sandbox, eventually};
use test_support::manifests::namespace;

use super::{APP_PORT, up};

/// The namespace of these tests.
const NS: &str = "mesh";
/// tcp-echo's port.
const ECHO_PORT: u16 = 9000;
/// Connections the first test makes while tapping.
const CONNECTIONS: usize = 5;
/// What each connection sends (the server answers its banner, then the same bytes).
const PAYLOAD: &[u8] = b"tapped connection payload\n";
/// The identities involved.
const CLIENT_ID: &str = "spiffe://cluster.local/ns/mesh/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/mesh/sa/default";
/// The DENY policy refusing the `foe` service account.
const DENY_FOE: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-foe, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/foe"]}}]
"#;

/// A tcp-echo server on node2, a client (service account `client`) and a foe (`foe`) on
/// node1, all captured; the policy denying the foe in force (the client still gets through).
fn echo_trio() -> (Sandbox, SocketAddr) {
    let manifests = namespace(NS, true)
        + &service_account(NS, "client")
        + &service_account(NS, "foe")
        + &tcp_echo_pod(NS, "server", "node2", ECHO_PORT)
        + &idle_pod(NS, "client", "node1", "client")
        + &idle_pod(NS, "foe", "node1", "foe")
        + DENY_FOE;
    let sb = up(&manifests);
    wait_captured(&sb, "node1", &["mesh/client", "mesh/foe"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    let server = SocketAddr::from((sb.pod_ip("server").unwrap(), ECHO_PORT));
    assert!(
        eventually(SETTLE, || exchange(&sb, "client", server).is_ok()),
        "the client reaches the echo server"
    );
    assert!(
        eventually(SETTLE, || exchange(&sb, "foe", server).is_err()),
        "the foe is denied"
    );
    // Nothing of the warm-up may still be open when a tap starts counting.
    assert!(eventually(SETTLE, || {
        active_connections(&sb, "node1", "mesh/client") == 0
            && active_connections(&sb, "node2", "mesh/server") == 0
    }));
    (sb, server)
}

/// One connection from `pod` to `server`: sends [`PAYLOAD`], finishes, reads until the
/// server closes. Its local address and what it received (banner then echo).
fn exchange(sb: &Sandbox, pod: &str, server: SocketAddr) -> std::io::Result<(SocketAddr, Vec<u8>)> {
    let netns = sb.netns_path(&format!("{NS}.{pod}"));
    in_netns(&netns, || -> std::io::Result<(SocketAddr, Vec<u8>)> {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let local = stream.local_addr()?;
        stream.write_all(PAYLOAD)?;
        stream.shutdown(Shutdown::Write)?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received)?;
        if received.is_empty() {
            return Err(std::io::Error::other("closed without a byte"));
        }
        Ok((local, received))
    })?
}

/// `meshctl tap deploy/server -n mesh --max <max> -o json`, listening once returned.
fn tap_server(sb: &Sandbox, max: usize) -> Child {
    let max = max.to_string();
    let (tap, line) = sb
        .spawn_watching(&[
            "tap",
            "deploy/server",
            "-n",
            NS,
            "--max",
            &max,
            "-o",
            "json",
        ])
        .expect("meshctl tap starts");
    assert_eq!(
        line.trim(),
        "tapping 2 ztunnels",
        "no waypoint: connections"
    );
    tap
}

/// The JSON events `tap` printed, once it stopped by itself.
fn tapped(mut tap: Child) -> Vec<serde_json::Value> {
    let exited = eventually(SETTLE, || tap.try_wait().unwrap().is_some());
    if !exited {
        let _ = tap.kill();
    }
    let out = tap.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(exited, "tap did not stop at --max; it printed:\n{stdout}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tap_shows_each_connection_opened_and_closed_with_identities_and_exact_bytes() {
    let (sb, server) = echo_trio();
    // Each connection: opened and closed at the client's ztunnel and at the server's.
    let tap = tap_server(&sb, 4 * CONNECTIONS);
    let echoed = [b"server\n".as_slice(), PAYLOAD].concat();
    let mut made = BTreeSet::new();
    for _ in 0..CONNECTIONS {
        let (local, received) = exchange(&sb, "client", server).expect("an echoed connection");
        assert_eq!(received, echoed);
        made.insert(local.to_string());
    }
    let client_ip = sb.pod_ip("client").unwrap().to_string();
    let events = tapped(tap);
    assert_eq!(events.len(), 4 * CONNECTIONS);
    let mut seen: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for event in &events {
        assert_eq!(event["kind"], "connection", "{event}");
        // The client's ztunnel sees the app's own socket; the server's the tunnel's, from
        // the client's IP.
        let source: SocketAddr = event["source_address"].as_str().unwrap().parse().unwrap();
        assert_eq!(source.ip().to_string(), client_ip, "{event}");
        if event["direction"] == "outbound" {
            assert!(
                made.contains(&source.to_string()),
                "not the test's: {event}"
            );
        }
        assert_eq!(event["source_identity"], CLIENT_ID, "{event}");
        assert_eq!(event["destination_identity"], SERVER_ID, "{event}");
        assert_eq!(event["source_workload"], "client", "{event}");
        assert_eq!(event["destination_workload"], "server", "{event}");
        assert_eq!(event["destination_namespace"], NS, "{event}");
        assert_eq!(event["destination_address"], server.to_string(), "{event}");
        assert_eq!(event["mtls"], true, "{event}");
        let direction = event["direction"].as_str().unwrap();
        let verdict = if direction == "inbound" { "allow" } else { "" };
        assert_eq!(event["verdict"].as_str().unwrap_or(""), verdict, "{event}");
        let phase = event["phase"].as_str().unwrap();
        if phase == "close" {
            assert_eq!(event["bytes_sent"], PAYLOAD.len(), "{event}");
            assert_eq!(event["bytes_received"], echoed.len(), "{event}");
            assert_eq!(event["response_flags"], "-", "{event}");
        }
        *seen.entry((direction, phase)).or_default() += 1;
    }
    let want = BTreeMap::from([
        (("inbound", "close"), CONNECTIONS),
        (("inbound", "open"), CONNECTIONS),
        (("outbound", "close"), CONNECTIONS),
        (("outbound", "open"), CONNECTIONS),
    ]);
    assert_eq!(seen, want);

    // Denied: one event with the verdict at the server's ztunnel; the foe's own ztunnel
    // sees its connection open and close, refused.
    let tap = tap_server(&sb, 3);
    exchange(&sb, "foe", server).expect_err("the foe is denied");
    let events = tapped(tap);
    let denied: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["direction"] == "inbound")
        .collect();
    assert_eq!(denied.len(), 1, "{events:?}");
    assert_eq!(denied[0]["verdict"], "deny");
    assert_eq!(denied[0]["policy"], "mesh/deny-foe");
    assert_eq!(
        denied[0]["source_identity"],
        "spiffe://cluster.local/ns/mesh/sa/foe"
    );
    let outbound: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["direction"] == "outbound")
        .map(|e| {
            (
                e["phase"].as_str().unwrap(),
                e["response_flags"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(outbound.len(), 2, "{events:?}");
    assert!(outbound.contains(&("open", "-")), "{events:?}");
    assert!(
        outbound
            .iter()
            .any(|(phase, flags)| *phase == "close" && *flags != "-"),
        "the foe's connection closed failed: {events:?}"
    );
}

/// `ztunnel_tap_events_dropped_total` of `node`'s ztunnel (-1 unread).
fn tap_drops(sb: &Sandbox, node: &str) -> f64 {
    ztunnel_metrics(sb, node).map_or(-1.0, |m| {
        metric_sum(&m, "ztunnel_tap_events_dropped_total", &[])
    })
}

#[test]
fn a_stalled_tap_on_a_ztunnel_costs_counted_drops_not_traffic() {
    // Enough new connections to fill the listener's queue and the kernel's buffers.
    const REQUESTS: u64 = 3000;
    let manifests = namespace(NS, true)
        + &echo_pod(NS, "server", "node2", APP_PORT)
        + &idle_pod(NS, "client", "node1", "default");
    let sb = up(&manifests);
    wait_captured(&sb, "node1", &["mesh/client"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    let server_ip: Ipv4Addr = sb.pod_ip("server").unwrap();
    let url = format!("http://{server_ip}:{APP_PORT}/");
    assert!(eventually(SETTLE, || sb.http("mesh/client", &url).is_ok()));
    assert_eq!(tap_drops(&sb, "node2"), 0.0);

    let stalled = in_netns(&sb.netns_path("node2"), || -> std::io::Result<TcpStream> {
        let mut tap = TcpStream::connect("127.0.0.1:15000")?;
        tap.write_all(b"GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        Ok(tap)
    })
    .unwrap()
    .unwrap();
    let requests = REQUESTS.to_string();
    let args = ["--url", &url, "-n", &requests, "-c", "4", "--new-conn"];
    let report = sb.load("mesh/client", &args).unwrap();
    assert_eq!(
        report.count(200),
        REQUESTS,
        "traffic is unaffected: {report:?}"
    );
    assert!(report.errors.is_empty(), "{report:?}");
    let dropped = tap_drops(&sb, "node2");
    assert!(
        dropped > 0.0,
        "a reader that never reads loses events, counted: {dropped}"
    );
    drop(stalled);
}
