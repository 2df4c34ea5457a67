//! The node proxies on the sandbox: capture of running pods, HBONE between nodes, source IP
//! preservation, peer authentication, authorization, load balancing, life without the
//! controller, certificate rotation, draining and replacement under load. Each test builds its
//! own two-node sandbox (controller, and per node a ztunnel and a node agent) with a unique
//! name, so they run in parallel.

#[path = "ztunnel/cni.rs"]
mod cni;
#[path = "ztunnel/edges.rs"]
mod edges;
#[path = "ztunnel/linkerd_policy.rs"]
mod linkerd_policy;
#[path = "ztunnel/probes.rs"]
mod probes;
#[path = "ztunnel/sniffer.rs"]
mod sniffer;
#[path = "ztunnel/tap.rs"]
mod tap;
#[path = "ztunnel/upgrade.rs"]
mod upgrade;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use e2e::manifests::{echo_pod, idle_pod, service_account};
use e2e::measure::rss_mib;
use e2e::mesh::{
    NODES, active_connections, captured, certificate_serials, get_json, in_netns, marker, pod_pids,
    wait_captured, wait_ready, ztunnel_metrics, ztunnel_pid,
};
use e2e::metrics::metric_sum;
use e2e::{Component, Options, SETTLE, Sandbox, eventually, process_exited};
use sniffer::Sniffer;
use test_support::manifests::namespace;

/// The ambient label.
const AMBIENT: &str = "istio.io/dataplane-mode=ambient";
/// HBONE's port.
const HBONE_PORT: u16 = 15008;
/// The echo server's port.
const APP_PORT: u16 = 8080;

/// A mesh-wide PeerAuthentication (in the root namespace).
fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

/// A client in `namespace` on node1 and a server in `namespace` on node2.
fn pair(ambient: bool) -> String {
    namespace("mesh", ambient)
        + &echo_pod("mesh", "server", "node2", APP_PORT)
        + &idle_pod("mesh", "client", "node1", "default")
}

fn up(manifests: &str) -> Sandbox {
    up_with(manifests, Options::default())
}

fn up_with(manifests: &str, options: Options) -> Sandbox {
    let sb = Sandbox::up_with(manifests, options).expect("sandbox up");
    wait_ready(&sb);
    sb
}

/// The ambient pair plus `extra` manifests, built with `options`: returned with the
/// server's IP once both pods are captured and the client reaches the server.
fn meshed_pair(extra: &str, options: Options) -> (Sandbox, Ipv4Addr) {
    let sb = up_with(&(pair(true) + extra), options);
    wait_captured(&sb, "node1", &["mesh/client"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    let server_ip = sb.pod_ip("server").unwrap();
    assert!(
        eventually(SETTLE, || get(&sb, "mesh/client", server_ip, "/").is_ok()),
        "the captured client reaches the captured server"
    );
    (sb, server_ip)
}

/// GETs `path` on the server pod from `client`; the reply, or the failure as text.
fn get(
    sb: &Sandbox,
    client: &str,
    server_ip: Ipv4Addr,
    path: &str,
) -> Result<serde_json::Value, String> {
    get_json(sb, client, &format!("http://{server_ip}:{APP_PORT}{path}"))
}

fn fabric(sb: &Sandbox) -> Sniffer {
    Sniffer::start(&sb.netns_path("fabric")).expect("packet capture in the fabric namespace")
}

#[test]
fn labelling_a_namespace_captures_running_pods_and_unlabelling_releases_them() {
    let sb = up(&pair(false));
    let client_ip = sb.pod_ip("client").unwrap();
    let server_ip = sb.pod_ip("server").unwrap();
    let pids = pod_pids(&sb);
    let sniffer = fabric(&sb);
    let call = |path: &str| get(&sb, "mesh/client", server_ip, path);

    // Before: plaintext, and the capture does see it once it has caught up (so the same
    // check after capture, below, means something).
    let clear = marker("plain");
    sniffer.watch(&clear);
    call(&format!("/{clear}")).expect("plaintext request");
    sniffer.sync();
    assert!(sniffer.saw(&clear), "capture sees plaintext");
    assert!(
        sniffer
            .server_ports(client_ip, server_ip)
            .contains(&APP_PORT)
    );

    sb.label("mesh", AMBIENT).unwrap();
    wait_captured(&sb, "node1", &["mesh/client"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    assert!(
        eventually(SETTLE, || call("/warm").is_ok()),
        "traffic flows once both pods are captured"
    );

    sniffer.clear();
    let secrets: Vec<String> = (0..5).map(|_| marker("secret")).collect();
    for secret in &secrets {
        sniffer.watch(secret);
        let reply = call(&format!("/{secret}")).expect("meshed request");
        assert_eq!(reply["path"], format!("/{secret}"));
    }
    // Every frame of those requests crossed before their answers came back: once the
    // capture has caught up, a secret in clear would have been seen.
    sniffer.sync();
    let ports = sniffer.server_ports(client_ip, server_ip);
    assert_eq!(
        ports,
        BTreeSet::from([HBONE_PORT]),
        "only HBONE between the pods"
    );
    for secret in &secrets {
        assert!(!sniffer.saw(secret), "{secret} crossed the fabric in clear");
    }
    assert_eq!(
        pod_pids(&sb),
        pids,
        "pods were not restarted to be captured"
    );

    sb.label("mesh", "istio.io/dataplane-mode-").unwrap();
    wait_captured(&sb, "node1", &[]);
    wait_captured(&sb, "node2", &[]);
    let again = marker("again");
    sniffer.watch(&again);
    assert!(
        eventually(SETTLE, || call(&format!("/{again}")).is_ok()),
        "traffic flows after release"
    );
    assert!(
        eventually(SETTLE, || sniffer.saw(&again)),
        "plaintext again"
    );
    assert_eq!(
        pod_pids(&sb),
        pids,
        "pods were not restarted to be released"
    );
}

#[test]
fn the_app_sees_the_real_client_ip() {
    let (sb, server_ip) = meshed_pair("", Options::default());
    let client_ip = sb.pod_ip("client").unwrap();
    let reply = get(&sb, "mesh/client", server_ip, "/who").expect("meshed request");
    let seen = reply["client"].as_str().unwrap_or_default();
    assert!(
        seen.starts_with(&format!("{client_ip}:")),
        "server saw {seen}, the client is {client_ip}"
    );
}

#[test]
fn strict_peer_authentication_refuses_plaintext_and_permissive_admits_it() {
    let outside = namespace("outside", false)
        + &idle_pod("outside", "stranger", "node1", "default")
        + &peer_authentication("PERMISSIVE");
    let (sb, server_ip) = meshed_pair(&outside, Options::default());
    let from = |pod: &str| get(&sb, pod, server_ip, "/pa").is_ok();
    assert!(
        eventually(SETTLE, || from("outside/stranger")),
        "PERMISSIVE admits plaintext"
    );

    sb.apply(&peer_authentication("STRICT")).unwrap();
    assert!(
        eventually(SETTLE, || !from("outside/stranger")),
        "STRICT refuses plaintext"
    );
    assert!(from("mesh/client"), "mTLS still admitted under STRICT");

    sb.apply(&peer_authentication("PERMISSIVE")).unwrap();
    assert!(
        eventually(SETTLE, || from("outside/stranger")),
        "PERMISSIVE admits plaintext again"
    );
}

#[test]
fn authorization_policy_allows_by_service_account_and_denies_the_rest() {
    let manifests = namespace("mesh", true)
        + &service_account("mesh", "allowed")
        + &service_account("mesh", "other")
        + &echo_pod("mesh", "server", "node2", APP_PORT)
        + &idle_pod("mesh", "friend", "node1", "allowed")
        + &idle_pod("mesh", "foe", "node1", "other");
    let sb = up(&manifests);
    wait_captured(&sb, "node1", &["mesh/foe", "mesh/friend"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    let server_ip = sb.pod_ip("server").unwrap();
    let from = |pod: &str| get(&sb, pod, server_ip, "/authz").is_ok();
    assert!(eventually(SETTLE, || from("mesh/friend") && from("mesh/foe")));

    let policy = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: server-allow, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/allowed"]}}]
"#;
    sb.apply(policy).unwrap();
    assert!(
        eventually(SETTLE, || !from("mesh/foe")),
        "other service accounts denied"
    );
    assert!(
        from("mesh/friend"),
        "the allowed service account still gets through"
    );
}

#[test]
fn services_balance_over_endpoints_on_both_nodes() {
    let manifests = namespace("mesh", true)
        + r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: mesh}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        command: [meshctl, app, http-echo, --port, "9090"]
        ports: [{name: web, containerPort: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: mesh}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: web}]
---
"# + &idle_pod("mesh", "client", "node1", "default");
    let sb = up(&manifests);
    let echoes: Vec<e2e::PodInfo> = sb
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.labels.get("app").map(String::as_str) == Some("echo"))
        .collect();
    let nodes: BTreeSet<&str> = echoes.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "one replica per node: {echoes:?}");
    for node in NODES {
        let mut want: Vec<String> = echoes
            .iter()
            .filter(|p| p.node == node)
            .map(|p| format!("mesh/{}", p.name))
            .collect();
        if node == "node1" {
            want.push("mesh/client".into());
        }
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        wait_captured(&sb, node, &want);
    }
    assert!(eventually(SETTLE, || sb
        .http("mesh/client", "http://echo.mesh/")
        .is_ok()));

    let report = sb
        .load(
            "mesh/client",
            &[
                "--url",
                "http://echo.mesh/",
                "-n",
                "80",
                "-c",
                "4",
                "--new-conn",
            ],
        )
        .unwrap();
    assert_eq!(report.count(200), 80, "{report:?}");
    let answered: BTreeSet<String> = report.by_pod.keys().cloned().collect();
    let expected: BTreeSet<String> = echoes.iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        answered, expected,
        "endpoints on both nodes answered: {report:?}"
    );
}

#[test]
fn traffic_survives_the_controller_and_a_restart_resyncs() {
    let (sb, server_ip) = meshed_pair("", Options::default());

    sb.stop(&Component::Controller).unwrap();
    for i in 0..5 {
        get(&sb, "mesh/client", server_ip, &format!("/alone-{i}"))
            .expect("traffic without the controller");
    }
    // A change made while the controller is away...
    let deny = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-client, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/mesh/sa/default"]}}]
"#;
    sb.apply(deny).unwrap();
    get(&sb, "mesh/client", server_ip, "/still").expect("the proxies keep the last config");

    // ...takes effect once it is back.
    sb.start(&Component::Controller).unwrap();
    assert!(
        eventually(SETTLE, || get(&sb, "mesh/client", server_ip, "/after")
            .is_err()),
        "the policy made while the controller was down applies after its restart"
    );
}

#[test]
fn requests_never_fail_across_certificate_rotations() {
    let options = Options {
        ztunnel_args: vec!["--cert-ttl-secs".into(), "20".into()],
        ..Options::default()
    };
    let (sb, server_ip) = meshed_pair("", options);

    // 10 requests a second for 70 s, each on a new connection: with a 20 s lifetime and
    // rotation at half-life, several certificates come and go on both nodes meanwhile.
    let url = format!("http://{server_ip}:{APP_PORT}/steady");
    let load = std::thread::scope(|s| {
        let load = s.spawn(|| {
            let args = [
                "--url",
                &url,
                "-n",
                "700",
                "-c",
                "4",
                "--rate",
                "10",
                "--new-conn",
            ];
            sb.load("mesh/client", &args)
        });
        let mut serials: BTreeSet<String> = BTreeSet::new();
        while !load.is_finished() {
            for node in NODES {
                serials.extend(certificate_serials(&sb, node).into_values());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (load.join().expect("load thread"), serials)
    });
    let (report, serials) = load;
    let report = report.unwrap();
    assert_eq!(report.count(200), 700, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    // Each node's first certificate makes 2 serials: more means rotations happened.
    assert!(serials.len() >= 5, "certificates seen: {serials:?}");
}

/// Stops `node`'s ztunnel with `meshctl stop` (SIGTERM, SIGKILL only after its drain
/// deadline) while a slow request crosses it: the request completes, the process exits by
/// itself once drained, and a fresh ztunnel takes over.
fn drain_during_a_slow_request(sb: &Sandbox, node: &str, pod: &str) {
    let server_ip = sb.pod_ip("server").unwrap();
    let ztunnel = Component::Ztunnel(node.into());
    let pid = ztunnel_pid(sb, node).expect("ztunnel running");
    std::thread::scope(|s| {
        let slow = s.spawn(|| {
            let url = format!("http://{server_ip}:{APP_PORT}/slow?latency_ms=4000");
            sb.try_http("mesh/client", &url, 30_000)
        });
        assert!(
            eventually(SETTLE, || active_connections(sb, node, pod) > 0),
            "the slow request is in flight through {node}"
        );
        // Returns once the process is gone.
        sb.stop(&ztunnel).expect("meshctl stop ztunnel");
        let out = slow.join().expect("request thread").unwrap();
        assert!(
            out.status.success(),
            "request cut by the drain: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert!(process_exited(pid), "ztunnel stopped");
    // The proxy's last words once every pod proxy has drained (per-pod lines carry fields).
    let log = sb.logs(&ztunnel).unwrap();
    assert!(
        log.lines().any(|l| l.trim_end().ends_with("drained")),
        "ztunnel finished its drain rather than being killed:\n{log}"
    );
    assert!(!log.contains('\x1b'), "colour codes in a log file:\n{log}");
    sb.start(&ztunnel).unwrap();
    wait_captured(sb, node, &[pod]);
    let works = || get(sb, "mesh/client", server_ip, "/after").is_ok();
    assert!(eventually(SETTLE, works), "the new ztunnel carries traffic");
}

#[test]
fn sigterm_drains_without_cutting_a_request_in_flight() {
    let (sb, _) = meshed_pair("", Options::default());
    // The client's side (outbound), then the server's side (inbound HBONE).
    drain_during_a_slow_request(&sb, "node1", "mesh/client");
    drain_during_a_slow_request(&sb, "node2", "mesh/server");
    assert!(captured(&sb, "node2").contains("mesh/server"));
}

/// A TLS ClientHello as an HBONE client sends it, to leave a handshake half done.
fn client_hello(sb: &Sandbox, server_ip: Ipv4Addr) -> Vec<u8> {
    let roots = hbone::cert::certificates_from_pem(&sb.root_cert_pem().unwrap(), "root").unwrap();
    let server = hbone::Identity::new("cluster.local", "mesh", "default").unwrap();
    let config = hbone::tls::client_config_without_client_auth(&roots, &[server]).unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::V4(server_ip).into());
    let mut tls = tokio_rustls::rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    hello
}

/// Opens `count` connections to `addr` from the network namespace `netns`, sending `hello`
/// on every other one.
fn hold_connections(
    netns: &std::path::Path,
    addr: SocketAddr,
    count: usize,
    hello: &[u8],
) -> Vec<TcpStream> {
    let open = || -> std::io::Result<Vec<TcpStream>> {
        (0..count)
            .map(|i| {
                let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                if i % 2 == 1 {
                    stream.write_all(hello)?;
                }
                Ok(stream)
            })
            .collect()
    };
    in_netns(netns, open)
        .unwrap()
        .expect("connections to the pod's HBONE port")
}

/// Reads `stream` until the server closes it (a reset counts); what it sent.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(SETTLE)).unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return seen,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

/// Connections held against node2's HBONE listener from node1, and what became of them.
struct Held<'a> {
    sb: &'a Sandbox,
    hbone: SocketAddr,
    hello: Vec<u8>,
}

impl Held<'_> {
    const COUNT: usize = 200;
    const CAP: usize = 150;

    /// `ztunnel_connections_<family>_total{listener="hbone",reason}` on node2 (-1 unread).
    fn count(&self, family: &str, reason: &str) -> f64 {
        ztunnel_metrics(self.sb, "node2").map_or(-1.0, |text| {
            let name = format!("ztunnel_connections_{family}_total");
            metric_sum(&text, &name, &[("listener", "hbone"), ("reason", reason)])
        })
    }

    /// Opens [`Held::COUNT`] connections from node1's own address (no pod's), half silent,
    /// half stopping after their ClientHello; checks the ones past the cap are refused at
    /// once, runs `meanwhile` (which times out `others` handshakes of its own), then waits
    /// until the server has closed the rest and counted them. Returns `meanwhile`'s result.
    fn round<T>(&self, others: usize, meanwhile: impl FnOnce() -> T) -> T {
        let refused = self.count("refused", "per_peer_limit");
        let closed = self.count("closed", "tls_handshake_timeout");
        let mut held = hold_connections(
            &self.sb.netns_path("node1"),
            self.hbone,
            Self::COUNT,
            &self.hello,
        );
        let want = refused + (Self::COUNT - Self::CAP) as f64;
        assert!(
            eventually(SETTLE, || self.count("refused", "per_peer_limit") == want),
            "connections past the cap are refused and counted: {}",
            self.count("refused", "per_peer_limit")
        );
        let result = meanwhile();
        for stream in &mut held {
            read_until_closed(stream);
        }
        let want = closed + (Self::CAP + others) as f64;
        assert!(
            eventually(SETTLE, || self.count("closed", "tls_handshake_timeout")
                == want),
            "every held connection is closed and counted: {}",
            self.count("closed", "tls_handshake_timeout")
        );
        result
    }
}

#[test]
fn handshakeless_connections_to_hbone_are_closed_counted_and_capped_per_peer() {
    let options = Options {
        ztunnel_args: vec![
            "--tls-handshake-timeout-secs=3".into(),
            format!("--max-connections-per-peer={}", Held::CAP),
        ],
        ..Options::default()
    };
    let (sb, server_ip) = meshed_pair("", options);
    let pid = ztunnel_pid(&sb, "node2").expect("ztunnel on node2");
    let rss = || rss_mib(pid).expect("ztunnel's RSS");
    let held = Held {
        sb: &sb,
        hbone: SocketAddr::from((server_ip, HBONE_PORT)),
        hello: client_hello(&sb, server_ip),
    };
    let rss_start = rss();

    let rss_first = held.round(2, || {
        // Other peers are served meanwhile: the client pod, and a handshake from node2.
        get(&sb, "mesh/client", server_ip, "/while-held").expect("another peer is served");
        let mut probe = hold_connections(&sb.netns_path("node2"), held.hbone, 2, &held.hello);
        assert!(
            !read_until_closed(&mut probe[1]).is_empty(),
            "node2's ClientHello is answered"
        );
        // Both are left to the server's timeout: one closed here first would count otherwise.
        read_until_closed(&mut probe[0]);
        rss()
    });
    // The allocator keeps what the first round freed for reuse: the baseline is taken once
    // it has been through the same load, so growth now would be a leak.
    std::thread::sleep(Duration::from_secs(2));
    let rss_before = rss();
    let rss_held = held.round(0, rss);
    let mut rss_after = rss_held;
    let returned = eventually(SETTLE, || {
        rss_after = rss();
        rss_after <= rss_before * 1.10
    });
    eprintln!(
        "ztunnel on node2, RSS in MiB: {rss_start:.1} at start, {rss_first:.1} with {cap} held, \
         {rss_before:.1} after the first round; {rss_held:.1} with {cap} held again, \
         {rss_after:.1} after",
        cap = Held::CAP
    );
    assert!(returned, "memory returns to within 10% of before");
    get(&sb, "mesh/client", server_ip, "/after").expect("traffic still flows");
}
