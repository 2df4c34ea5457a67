//! Gateway API TCPRoute through the waypoint (`examples/l7/tcproute`): connections from the
//! client pod to the tcp-echo Service reach the backend each one is given by weight (the echo
//! pod's banner names it), a backend that does not exist refuses its connections, the
//! waypoint's TCP metrics name the backend that served, and a DENY policy at the waypoint
//! refuses every connection.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use e2e::mesh::in_netns;
use e2e::metrics::metric_sum;
use e2e::{SETTLE, Sandbox, eventually};

use super::shop::{self, NS, apply_example, waypoint_log, waypoint_metrics};

/// The port of the tcp-echo Services.
const PORT: u16 = 9000;
/// Connections of a split run.
const CONNECTIONS: usize = 200;
/// What a connection that was refused reports instead of a backend.
const REFUSED: &str = "(refused)";

/// The tcp-echo Service's cluster IP and port.
fn target(sb: &Sandbox) -> SocketAddr {
    let cluster = meshctl::sandbox::host::state::peek(&sb.state_dir()).expect("sandbox state");
    let service = cluster
        .find("Service", Some(NS), "tcp-echo")
        .expect("the tcp-echo Service");
    let ip: IpAddr = service.object.value["spec"]["clusterIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .expect("a cluster IP");
    SocketAddr::new(ip, PORT)
}

/// One connection from the client pod: the Deployment whose pod wrote the banner (after a
/// line echoed back whole), or [`REFUSED`] when the connection closed before any banner.
fn one_connection(target: SocketAddr) -> String {
    let mut stream = match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return format!("connect failed: {e}"),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut banner = String::new();
    match reader.read_line(&mut banner) {
        Ok(0) => return REFUSED.to_string(),
        // ztunnel resets the client's connection when the waypoint refuses the tunnel.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return REFUSED.to_string();
        }
        Err(e) => return format!("read failed: {e}"),
        Ok(_) => {}
    }
    let line = "ping through the waypoint\n";
    let mut echoed = String::new();
    let echo = stream
        .write_all(line.as_bytes())
        .and_then(|()| reader.read_line(&mut echoed));
    if echo.is_err() || echoed != line {
        return format!("echo failed: {echo:?} {echoed:?}");
    }
    deployment(banner.trim())
}

/// `tcp-echo-v1` of the pod name `tcp-echo-v1-<hash>-<suffix>`.
fn deployment(pod: &str) -> String {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    parts.last().copied().unwrap_or(pod).to_string()
}

/// `count` connections one after the other; how many each backend (or refusal) got.
fn connections(sb: &Sandbox, count: usize) -> BTreeMap<String, usize> {
    let target = target(sb);
    let netns = sb.netns_path(&format!("{NS}.client"));
    in_netns(&netns, || {
        let mut seen = BTreeMap::new();
        for _ in 0..count {
            *seen.entry(one_connection(target)).or_insert(0) += 1;
        }
        seen
    })
    .expect("entering the client pod's network namespace")
}

/// A TCPRoute on port 9000 of tcp-echo with `backends` ((Service, weight)).
fn route(backends: &[(&str, u32)]) -> String {
    let refs: Vec<String> = backends
        .iter()
        .map(|(name, weight)| format!("    - {{name: {name}, port: {PORT}, weight: {weight}}}"))
        .collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata:\n  \
         name: tcp-echo\n  namespace: {NS}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: \
         Service, name: tcp-echo, port: {PORT}}}\n  rules:\n  - backendRefs:\n{}\n",
        refs.join("\n")
    )
}

/// Applies `yaml`, then waits until 20 connections all satisfy `done`.
fn apply_and_wait(sb: &Sandbox, yaml: &str, what: &str, done: impl Fn(&str) -> bool) {
    sb.apply(yaml)
        .unwrap_or_else(|e| panic!("applying {what}: {e}"));
    let mut last = BTreeMap::new();
    let reached = eventually(SETTLE, || {
        last = connections(sb, 20);
        last.keys().all(|k| done(k))
    });
    assert!(
        reached,
        "never saw {what}: {last:?}\n--- waypoint log\n{}",
        waypoint_log(sb)
    );
}

/// The waypoint's `istio_tcp_connections_opened_total` / `_closed_total` for `workload`.
fn tcp_counts(sb: &Sandbox, workload: &str) -> (f64, f64) {
    let metrics = waypoint_metrics(sb).unwrap_or_default();
    let filter = [
        ("reporter", "waypoint"),
        ("destination_workload", workload),
        ("destination_service_name", workload),
    ];
    (
        metric_sum(&metrics, "istio_tcp_connections_opened_total", &filter),
        metric_sum(&metrics, "istio_tcp_connections_closed_total", &filter),
    )
}

#[test]
fn tcproute_weights_pick_the_backend_per_connection_and_refuse_missing_ones() {
    let sb = shop::up();
    apply_example(&sb, "tcproute");
    // The example's 80/20 split: over 200 connections both answer.
    let mut split = BTreeMap::new();
    let both = eventually(SETTLE, || {
        split = connections(&sb, CONNECTIONS);
        split.len() == 2 && split.contains_key("tcp-echo-v1") && split.contains_key("tcp-echo-v2")
    });
    assert!(
        both,
        "80/20: {split:?}\n--- waypoint log\n{}",
        waypoint_log(&sb)
    );

    apply_and_wait(
        &sb,
        &route(&[("tcp-echo-v1", 100), ("tcp-echo-v2", 0)]),
        "100/0",
        |k| k == "tcp-echo-v1",
    );
    let before = (
        tcp_counts(&sb, "tcp-echo-v1"),
        tcp_counts(&sb, "tcp-echo-v2"),
    );
    let all_v1 = connections(&sb, CONNECTIONS);
    assert_eq!(
        all_v1,
        BTreeMap::from([("tcp-echo-v1".to_string(), CONNECTIONS)]),
        "100/0: every connection reaches v1"
    );
    // The metrics count each connection under the backend that served it; the closing of
    // the last ones may trail the client's view briefly.
    let expected = (
        (
            before.0.0 + CONNECTIONS as f64,
            before.0.1 + CONNECTIONS as f64,
        ),
        before.1,
    );
    let mut counted = before;
    let settled = eventually(SETTLE, || {
        counted = (
            tcp_counts(&sb, "tcp-echo-v1"),
            tcp_counts(&sb, "tcp-echo-v2"),
        );
        counted == expected
    });
    assert!(
        settled,
        "istio_tcp_connections_{{opened,closed}}_total (v1, v2): {counted:?}, expected {expected:?}"
    );
    let log = shop::waypoint_log_tail(&sb, 50);
    assert!(
        log.lines().any(|l| l.contains("connection complete")
            && l.contains("dst.service=\"tcp-echo-v1.shop.svc.cluster.local\"")
            && l.contains("dst.workload=\"tcp-echo-v1\"")),
        "the access log names the backend that served:\n{log}"
    );

    apply_and_wait(
        &sb,
        &route(&[("tcp-echo-v1", 0), ("tcp-echo-v2", 100)]),
        "0/100",
        |k| k == "tcp-echo-v2",
    );
    assert_eq!(
        connections(&sb, CONNECTIONS),
        BTreeMap::from([("tcp-echo-v2".to_string(), CONNECTIONS)]),
        "0/100: every connection reaches v2"
    );

    let half = route(&[("tcp-echo-v1", 50), ("tcp-echo-v2", 50)]);
    sb.apply(&half).expect("applying 50/50");
    let mut seen = BTreeMap::new();
    let both = eventually(SETTLE, || {
        seen = connections(&sb, CONNECTIONS);
        seen.keys().all(|k| k.starts_with("tcp-echo-v")) && seen.len() == 2
    });
    assert!(both, "50/50 over {CONNECTIONS} connections: {seen:?}");

    // A backend that does not exist: its connections are refused, the others still served.
    let missing = route(&[("tcp-echo-v1", 50), ("tcp-echo-v3", 50)]);
    let out = sb
        .apply_output(&missing)
        .expect("applying a missing backend");
    let findings = String::from_utf8_lossy(&out.stderr);
    assert!(
        findings.contains(
            "TCPRoute shop/tcp-echo: field spec.rules[0].backendRefs[1].name: \
                           warning: no Service shop/tcp-echo-v3"
        ),
        "apply reports the missing backend: {findings}"
    );
    let mut seen = BTreeMap::new();
    let mixed = eventually(SETTLE, || {
        seen = connections(&sb, 100);
        seen.keys().all(|k| k == "tcp-echo-v1" || k == REFUSED) && seen.len() == 2
    });
    assert!(
        mixed,
        "v1 or refused: {seen:?}\n--- waypoint log\n{}",
        waypoint_log(&sb)
    );
}

#[test]
fn a_deny_policy_at_the_waypoint_refuses_tcproute_connections() {
    let sb = shop::up();
    apply_example(&sb, "tcproute");
    apply_and_wait(&sb, &route(&[("tcp-echo-v1", 1)]), "v1 only", |k| {
        k == "tcp-echo-v1"
    });
    let deny = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: \
         no-tcp-echo\n  namespace: {NS}\nspec:\n  targetRefs:\n  - {{kind: Service, group: \
         \"\", name: tcp-echo}}\n  action: DENY\n  rules:\n  - from:\n    - source:\n        \
         principals: [cluster.local/ns/{NS}/sa/client]\n"
    );
    apply_and_wait(&sb, &deny, "connections denied", |k| k == REFUSED);
    assert_eq!(
        connections(&sb, 20),
        BTreeMap::from([(REFUSED.to_string(), 20)]),
        "every connection from the client is refused"
    );
    let log = shop::waypoint_log_tail(&sb, 50);
    assert!(
        log.lines().any(|l| l.contains("connection complete")
            && l.contains("dst.addr=10.96.")
            && l.contains("error=\"denied by policy\"")),
        "the access log names the refused connections:\n{log}"
    );
}
