//! The node agent against real network namespaces: rule installation and removal, traffic
//! capture through the installed rules, namespace discovery, and the ZDS hand-off to a proxy.
//!
//! Every test builds its own uniquely named namespaces and folders and removes them on drop
//! (also when it fails), so tests run in parallel and leave nothing behind. Needs root.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use api::zds::{
    Ack, Version, WorkloadRequest, WorkloadResponse, ZdsHello, workload_request, workload_response,
};
use serde_json::json;
use test_support::TempDir;
use test_support::fake_kube::{FakeKube, Reply, Routes};
use test_support::netns::TestNetns;
use test_support::process::KillOnDrop;
use tokio::sync::watch;
use ztunnel::agent::cni::install::{self as cni_install, PluginEntry};
use ztunnel::agent::host_rules::HostRules;
use ztunnel::agent::iptables::{self, Family};
use ztunnel::agent::kube_api::KubeApi;
use ztunnel::agent::metrics::AgentMetrics;
use ztunnel::agent::netns::Netns;
use ztunnel::agent::uninstall::UninstallCheck;
use ztunnel::agent::{NetnsSource, NodeDuties, NodePod};
use ztunnel::settings::CniInstallSettings;
use ztunnel::zds::{ZdsListener, ZdsStream};

/// The CNI plugin binary, run as a runtime runs it, against this file's agent.
#[path = "agent/cni.rs"]
mod cni;

/// Bound on any single wait, so a broken agent fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(30);

/// What these tests read of a namespace beyond what [`TestNetns`] offers.
trait Inspect {
    /// The agent's own handle on the namespace.
    fn open(&self) -> Netns;
    /// `iptables-save` without comments and counters.
    fn saved_rules(&self) -> Vec<String>;
    /// How many `ip rule`s send connmarked packets to table 100.
    fn fwmark_rules(&self) -> usize;
}

impl Inspect for TestNetns {
    fn open(&self) -> Netns {
        Netns::open(&self.path()).unwrap()
    }

    fn saved_rules(&self) -> Vec<String> {
        self.exec(&["iptables-save"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    fn fwmark_rules(&self) -> usize {
        self.ip(&["-4", "rule", "show"])
            .lines()
            .filter(|l| l.contains("fwmark 0x111/0xfff lookup 100"))
            .count()
    }
}

const EXPECTED_RULES: &[&str] = &[
    ":ISTIO_PRERT - [0:0]",
    ":ISTIO_OUTPUT - [0:0]",
    "-A PREROUTING -j ISTIO_PRERT",
    "-A OUTPUT -j ISTIO_OUTPUT",
    "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",
    "-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
    "-A ISTIO_PRERT -s 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",
    "-A ISTIO_OUTPUT -d 169.254.7.127/32 -p tcp -m tcp -j ACCEPT",
    "-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006",
    "-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
    "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT",
    "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001",
];

fn assert_installed(ns: &TestNetns) {
    let saved = ns.saved_rules();
    for line in EXPECTED_RULES {
        assert!(
            saved.iter().any(|l| l == line),
            "missing `{line}` in:\n{}",
            saved.join("\n")
        );
    }
    assert_eq!(ns.fwmark_rules(), 1);
    assert!(
        ns.ip(&["-4", "route", "show", "table", "100"])
            .contains("local default dev lo"),
    );
}

fn assert_clean(ns: &TestNetns) {
    let saved = ns.saved_rules().join("\n");
    assert!(!saved.contains("ISTIO_"), "left behind:\n{saved}");
    assert_eq!(ns.fwmark_rules(), 0);
}

#[tokio::test]
async fn rules_install_idempotently_and_remove_exactly() {
    let ns = TestNetns::new("zta-rules");
    // Someone else's rule in a built-in chain must survive everything we do.
    ns.exec(&[
        "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT",
    ]);
    let fd = ns.open();

    iptables::install(fd.fd(), &[Family::V4]).await.unwrap();
    assert_installed(&ns);
    let first = ns.saved_rules();

    iptables::install(fd.fd(), &[Family::V4]).await.unwrap();
    assert_eq!(ns.saved_rules(), first, "a second install changes nothing");
    assert_eq!(ns.fwmark_rules(), 1);
    let state = iptables::installed(fd.fd(), Family::V4).await.unwrap();
    assert!(state.hooked());

    iptables::remove(fd.fd(), &[Family::V4]).await.unwrap();
    assert_clean(&ns);
    assert!(
        ns.saved_rules()
            .iter()
            .any(|l| l == "-A OUTPUT -p udp -j ACCEPT")
    );
    // Removing again finds nothing to do and succeeds.
    iptables::remove(fd.fd(), &[Family::V4]).await.unwrap();
    assert_clean(&ns);
}

/// A pod namespace `10.77.0.2/24` on a veth to a peer namespace `10.77.0.1/24`, which is
/// also the pod's default gateway.
fn pod_and_peer() -> (TestNetns, TestNetns) {
    let pod = TestNetns::new("zta-pod");
    let peer = TestNetns::new("zta-peer");
    let (a, b) = ("eth0", "veth-pod");
    pod.ip(&[
        "link",
        "add",
        a,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        peer.name(),
    ]);
    pod.ip(&["addr", "add", "10.77.0.2/24", "dev", a]);
    pod.ip(&["link", "set", a, "up"]);
    pod.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    peer.ip(&["addr", "add", "10.77.0.1/24", "dev", b]);
    peer.ip(&["link", "set", b, "up"]);
    (pod, peer)
}

fn original_dst(stream: &TcpStream) -> SocketAddr {
    socket2::SockRef::from(stream)
        .original_dst_v4()
        .unwrap()
        .as_socket()
        .unwrap()
}

fn connect(to: &str) -> TcpStream {
    TcpStream::connect_timeout(&to.parse().unwrap(), WAIT).unwrap()
}

/// Connects to `to` as the proxy does: with the proxy's mark, from `from` when given
/// (IP_TRANSPARENT, so any address will do).
fn proxy_connect(from: Option<&str>, to: &str) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    socket.set_mark(iptables::INPOD_MARK).unwrap();
    if let Some(from) = from {
        socket.set_ip_transparent_v4(true).unwrap();
        let from: SocketAddr = from.parse().unwrap();
        socket.bind(&from.into()).unwrap();
    }
    let to: SocketAddr = to.parse().unwrap();
    socket.connect_timeout(&to.into(), WAIT).unwrap();
    TcpStream::from(socket)
}

#[tokio::test]
async fn installed_rules_capture_pod_traffic() {
    let (pod, peer) = pod_and_peer();
    iptables::install(pod.open().fd(), &[Family::V4])
        .await
        .unwrap();

    let (outbound, inbound, hbone) = pod.run(|| {
        (
            TcpListener::bind("0.0.0.0:15001").unwrap(),
            TcpListener::bind("0.0.0.0:15006").unwrap(),
            TcpListener::bind("0.0.0.0:15008").unwrap(),
        )
    });
    let peer_app = peer.run(|| TcpListener::bind("10.77.0.1:9000").unwrap());

    // Outbound: an application connecting anywhere lands on 15001 and the original
    // destination is recoverable.
    let mut app = pod.run(|| connect("198.51.100.10:80"));
    let (mut captured, _) = outbound.accept().unwrap();
    assert_eq!(original_dst(&captured), "198.51.100.10:80".parse().unwrap());
    app.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    captured.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    // Inbound plaintext: a peer connecting to an application port lands on 15006.
    let _client = peer.run(|| connect("10.77.0.2:8080"));
    let (captured, from) = inbound.accept().unwrap();
    assert_eq!(original_dst(&captured), "10.77.0.2:8080".parse().unwrap());
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)));

    // HBONE is not redirected: it reaches the 15008 listener as addressed.
    let _tunnel = peer.run(|| connect("10.77.0.2:15008"));
    let (tunnel, _) = hbone.accept().unwrap();
    assert_eq!(
        tunnel.local_addr().unwrap(),
        "10.77.0.2:15008".parse().unwrap()
    );

    // The proxy's own sockets (mark 0x539) are not redirected: this one reaches the peer.
    let _upstream = pod.run(|| proxy_connect(None, "10.77.0.1:9000"));
    let (_, from) = peer_app.accept().unwrap();
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)));

    // Source-preserving delivery: the proxy connects to the application with the client's
    // address. The application's replies to that (remote) address must come back to the
    // proxy, not leave through eth0: connmark 0x111 plus table 100 do that.
    let app = pod.run(|| TcpListener::bind("10.77.0.2:8080").unwrap());
    let mut spoofed = pod.run(|| proxy_connect(Some("10.77.0.1:41000"), "10.77.0.2:8080"));
    let (mut served, from) = app.accept().unwrap();
    assert_eq!(from, "10.77.0.1:41000".parse().unwrap());
    served.write_all(b"pong").unwrap();
    spoofed.set_read_timeout(Some(WAIT)).unwrap();
    spoofed.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

fn pod(uid_name: &str, namespace: &str, addresses: &[&str], enrolled: bool) -> NodePod {
    NodePod {
        uid: format!("Kubernetes//Pod/{namespace}/{uid_name}"),
        name: uid_name.into(),
        namespace: namespace.into(),
        service_account: "default".into(),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        enrolled,
    }
}

#[tokio::test]
async fn proc_scan_finds_a_pod_namespace_by_its_ip() {
    let ns = TestNetns::new("zta-proc");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.ip(&["addr", "add", "10.231.77.5/32", "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    // A process keeps the namespace visible in /proc, as a pod's sandbox process does.
    let _sleeper = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", ns.name(), "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let wanted = pod("web", "shop", &["10.231.77.5"], true);
    let absent = pod("gone", "shop", &["10.231.77.6"], true);
    let source = NetnsSource::Proc(PathBuf::from("/proc"));
    let expected = std::fs::metadata(ns.path()).unwrap().ino();
    // The sleeper may still be starting: look again until it shows up (bounded).
    let deadline = std::time::Instant::now() + WAIT;
    let found = loop {
        let found = source.find(&[&wanted, &absent]).unwrap();
        if !found.is_empty() || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[&wanted.uid].id().ino, expected);
}

/// The proxy side of ZDS, answering every request with an empty `Ack`.
struct Proxy(ZdsStream);

impl Proxy {
    async fn connect(socket: &Path) -> Proxy {
        let stream = ZdsStream::connect(socket).await.unwrap();
        stream
            .send(
                &ZdsHello {
                    version: Version::V1 as i32,
                },
                None,
            )
            .await
            .unwrap();
        Proxy(stream)
    }

    async fn next(&self) -> (workload_request::Payload, Option<std::os::fd::OwnedFd>) {
        let (request, fd): (WorkloadRequest, _) = tokio::time::timeout(WAIT, self.0.recv())
            .await
            .expect("the agent sent nothing")
            .unwrap();
        let ack = WorkloadResponse {
            payload: Some(workload_response::Payload::Ack(Ack::default())),
        };
        self.0.send(&ack, None).await.unwrap();
        (request.payload.unwrap(), fd)
    }
}

/// Everything one agent under test needs.
struct Agent {
    feed: watch::Sender<Option<Vec<NodePod>>>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn start(socket: &Path, netns_dir: &Path, pods: Vec<NodePod>) -> Agent {
        Self::start_with(socket, netns_dir, pods, NodeDuties::default())
    }

    /// An agent that also does `duties` for the node.
    fn start_with(
        socket: &Path,
        netns_dir: &Path,
        pods: Vec<NodePod>,
        duties: NodeDuties,
    ) -> Agent {
        let listener = ZdsListener::bind(socket).unwrap();
        let (feed, feed_rx) = watch::channel(Some(pods));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(ztunnel::agent::serve_with(
            listener,
            NetnsSource::Dir(netns_dir.to_path_buf()),
            duties,
            feed_rx,
            shutdown_rx,
        ));
        Agent {
            feed,
            shutdown,
            task,
        }
    }

    /// [`Agent::start`], also answering the CNI plugin on `cni_socket`.
    fn start_cni(socket: &Path, cni_socket: &Path, netns_dir: &Path, pods: Vec<NodePod>) -> Agent {
        let duties = NodeDuties {
            cni: Some(ztunnel::agent::cni::server::bind(cni_socket).unwrap()),
            ..NodeDuties::default()
        };
        Self::start_with(socket, netns_dir, pods, duties)
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("agent did not stop")
            .unwrap();
    }
}

#[tokio::test]
async fn agent_hands_enrolled_pods_to_the_proxy() {
    let ns = TestNetns::new("zta-zds");
    let dir = TempDir::new("zta-zds");
    let netns_dir = dir.join("netns");
    std::fs::create_dir_all(&netns_dir).unwrap();
    // The sandbox names a pod's namespace `<namespace>.<pod name>`.
    std::os::unix::fs::symlink(ns.path(), netns_dir.join("shop.web-1")).unwrap();
    let socket = dir.join("zds").join("ztunnel.sock");
    let web = pod("web-1", "shop", &["10.77.1.2"], true);
    let later = pod("late-1", "shop", &["10.77.1.3"], true);
    let expected = std::fs::metadata(ns.path()).unwrap();

    let agent = Agent::start(&socket, &netns_dir, vec![web.clone(), later.clone()]);
    let proxy = Proxy::connect(&socket).await;

    // The snapshot: the captured pod with its namespace, the one not found yet as Keep.
    let mut adds = Vec::new();
    let mut keeps = Vec::new();
    loop {
        match proxy.next().await {
            (workload_request::Payload::Add(add), fd) => adds.push((add, fd)),
            (workload_request::Payload::Keep(keep), _) => keeps.push(keep.uid),
            (workload_request::Payload::SnapshotSent(_), _) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(keeps, std::slice::from_ref(&later.uid));
    assert_eq!(adds.len(), 1);
    let (add, fd) = adds.pop().unwrap();
    assert_eq!(add.uid, web.uid);
    let info = add.workload_info.unwrap();
    assert_eq!(
        (
            info.name.as_str(),
            info.namespace.as_str(),
            info.service_account.as_str()
        ),
        ("web-1", "shop", "default")
    );
    let fd = fd.expect("Add carries the namespace");
    let got = std::fs::File::from(fd).metadata().unwrap();
    assert_eq!((got.dev(), got.ino()), (expected.dev(), expected.ino()));
    // Rules go in before the proxy is told.
    assert_installed(&ns);

    // The late pod's namespace appears: the agent's retry captures it.
    let late_ns = TestNetns::new("zta-late");
    std::os::unix::fs::symlink(late_ns.path(), netns_dir.join("shop.late-1")).unwrap();
    match proxy.next().await {
        (workload_request::Payload::Add(add), Some(fd)) => {
            assert_eq!(add.uid, later.uid);
            let got = std::fs::File::from(fd).metadata().unwrap();
            assert_eq!(got.ino(), std::fs::metadata(late_ns.path()).unwrap().ino());
        }
        other => panic!("expected an Add with a namespace, got {other:?}"),
    }
    assert_installed(&late_ns);

    // Leaving the mesh: rules removed first, then Del.
    let mut web_out = web.clone();
    web_out.enrolled = false;
    agent.feed.send_replace(Some(vec![web_out, later.clone()]));
    match proxy.next().await {
        (workload_request::Payload::Del(del), None) => assert_eq!(del.uid, web.uid),
        other => panic!("expected Del, got {other:?}"),
    }
    assert_clean(&ns);

    // Back in, then the agent stops: the rules stay.
    agent
        .feed
        .send_replace(Some(vec![web.clone(), later.clone()]));
    match proxy.next().await {
        (workload_request::Payload::Add(add), Some(_)) => assert_eq!(add.uid, web.uid),
        other => panic!("expected Add, got {other:?}"),
    }
    agent.stop().await;
    assert_installed(&ns);
    assert_installed(&late_ns);

    // A restarted agent replaces the socket and sends the full snapshot again.
    let agent = Agent::start(&socket, &netns_dir, vec![web.clone(), later.clone()]);
    let proxy = Proxy::connect(&socket).await;
    let mut uids = Vec::new();
    loop {
        match proxy.next().await {
            (workload_request::Payload::Add(add), Some(_)) => uids.push(add.uid),
            (workload_request::Payload::SnapshotSent(_), _) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    uids.sort();
    assert_eq!(uids, [later.uid.clone(), web.uid.clone()]);
    assert_installed(&ns);

    // A pod gone from the node is released without touching its (vanishing) namespace.
    agent.feed.send_replace(Some(vec![web.clone()]));
    match proxy.next().await {
        (workload_request::Payload::Del(del), None) => assert_eq!(del.uid, later.uid),
        other => panic!("expected Del, got {other:?}"),
    }
    agent.stop().await;
}

/// The node's duties with the probe rule kept in `node`, the CNI plugin chained into the
/// CNI folders of `cni` (`bin/`, `net.d/` with a bridge network) and the uninstall decided by
/// `daemonset`'s answer from a fake API server (kept alive by the returned handle).
fn node_duties(node: &TestNetns, cni: &Path, daemonset: Reply) -> (NodeDuties, FakeKube) {
    let fake = FakeKube::routes(Routes::new().reply(DAEMONSET, daemonset));
    let api = KubeApi::plain(&fake.url()).unwrap();
    let host = HostRules::new(
        node.open().into_fd(),
        std::sync::Arc::new(AgentMetrics::default()),
    );
    let duties = NodeDuties {
        host: Some(host),
        uninstall: Some(UninstallCheck::parse(api, "istio-system/ztunnel").unwrap()),
        cni: None,
        cni_install: Some(chain_cni_plugin(cni)),
        ..NodeDuties::default()
    };
    (duties, fake)
}

/// Chains the plugin into a node's CNI folders under `dir`, as the agent does at start.
fn chain_cni_plugin(dir: &Path) -> CniInstallSettings {
    let (bin_dir, conf_dir) = (dir.join("bin"), dir.join("net.d"));
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(&conf_dir).unwrap();
    let network = json!({"cniVersion": "1.0.0", "name": "pods",
                         "plugins": [{"type": "bridge", "bridge": "cni0"}]});
    std::fs::write(conf_dir.join("10-pods.conflist"), network.to_string()).unwrap();
    let plugin = dir.join("ztunnel-cni");
    std::fs::write(&plugin, "#!/bin/sh\n").unwrap();
    let entry = PluginEntry {
        agent_socket: dir.join("cni.sock"),
        exclude_namespaces: vec!["kube-system".into()],
    };
    cni_install::install(&plugin, &bin_dir, &conf_dir, &entry).unwrap();
    CniInstallSettings {
        plugin,
        bin_dir,
        conf_dir,
        exclude_namespaces: entry.exclude_namespaces,
    }
}

/// The plugin types chained in the node's network of `dir`, and whether its binary is there.
fn chained(dir: &Path) -> (Vec<String>, bool) {
    let text = std::fs::read_to_string(dir.join("net.d/10-pods.conflist")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let types = config["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_owned())
        .collect();
    (types, dir.join("bin/ztunnel-cni").exists())
}

const DAEMONSET: &str = "/apis/apps/v1/namespaces/istio-system/daemonsets/ztunnel";

/// The node's probe SNAT rules, as `iptables-save -t nat` lists them.
fn probe_rules(node: &TestNetns) -> Vec<String> {
    node.exec(&["iptables-save", "-t", "nat"])
        .lines()
        .filter(|l| l.contains("ISTIO_POSTRT"))
        .map(str::to_owned)
        .collect()
}

/// Waits for the snapshot's end, the proxy acknowledging every message.
async fn through_snapshot(proxy: &Proxy) {
    while !matches!(
        proxy.next().await,
        (workload_request::Payload::SnapshotSent(_), _)
    ) {}
}

#[tokio::test]
async fn an_uninstall_gives_every_pod_its_network_back_and_a_restart_does_not() {
    let (pod_ns, node) = (TestNetns::new("zta-un-pod"), TestNetns::new("zta-un-node"));
    let dir = TempDir::new("zta-uninstall");
    let netns_dir = dir.join("netns");
    std::fs::create_dir_all(&netns_dir).unwrap();
    std::os::unix::fs::symlink(pod_ns.path(), netns_dir.join("shop.web-1")).unwrap();
    let socket = dir.join("zds").join("ztunnel.sock");
    let web = pod("web-1", "shop", &["10.77.2.2"], true);

    // The DaemonSet is still there when the agent stops: a restart, everything stays.
    let present = Reply::Json(
        200,
        json!({"kind": "DaemonSet", "metadata": {"name": "ztunnel"}}),
    );
    let (duties, fake) = node_duties(&node, &dir.join("cni"), present);
    let agent = Agent::start_with(&socket, &netns_dir, vec![web.clone()], duties);
    let proxy = Proxy::connect(&socket).await;
    through_snapshot(&proxy).await;
    assert_installed(&pod_ns);
    let probe = "-A ISTIO_POSTRT -d 10.77.2.2/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127";
    let until_probe_rule = async {
        while !probe_rules(&node).iter().any(|r| r == probe) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, until_probe_rule)
        .await
        .expect("the probe rule");
    agent.stop().await;
    assert!(
        fake.seen().iter().any(|r| r.path == DAEMONSET),
        "the DaemonSet read at stop"
    );
    assert_installed(&pod_ns);
    assert!(probe_rules(&node).iter().any(|r| r == probe));
    let with_plugin = (vec!["bridge".to_owned(), "ztunnel-cni".to_owned()], true);
    assert_eq!(chained(&dir.join("cni")), with_plugin);

    // Gone: the mesh is being uninstalled, the pod gets its own network back and the
    // node's probe rule goes.
    let (duties, _fake) = node_duties(
        &node,
        &dir.join("cni"),
        test_support::fake_kube::not_found(),
    );
    let agent = Agent::start_with(&socket, &netns_dir, vec![web.clone()], duties);
    let proxy = Proxy::connect(&socket).await;
    through_snapshot(&proxy).await;
    assert_installed(&pod_ns);
    agent.stop().await;
    assert_clean(&pod_ns);
    assert_eq!(probe_rules(&node), Vec::<String>::new());
    // And no new pod waits for an agent that is gone: the plugin is out of the network.
    assert_eq!(
        chained(&dir.join("cni")),
        (vec!["bridge".to_owned()], false)
    );
}

/// `ztunnel node-agent` run as the DaemonSet runs it, with `--daemonset`, against a fake API
/// server: a stop reads the DaemonSet; a malformed reference is refused at start.
#[test]
fn the_agent_binary_reads_its_daemonset_when_it_stops() {
    let fake =
        FakeKube::routes(Routes::new().reply(DAEMONSET, test_support::fake_kube::not_found()));
    let dir = TempDir::new("zta-bin");
    let socket = dir.join("ztunnel.sock");
    let root = hbone::Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
    dir.write("root-cert.pem", root.root_pem());
    let agent = |daemonset: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ztunnel"));
        command
            .args([
                "node-agent",
                "--node",
                "node1",
                "--controller",
                "127.0.0.1:1",
            ])
            .arg("--root-cert")
            .arg(dir.join("root-cert.pem"))
            .arg("--zds-socket")
            .arg(&socket)
            .arg("--netns-dir")
            .arg(dir.path())
            .args(["--host-probe-rule=false", "--daemonset", daemonset])
            .args(["--kube-api", &fake.url()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        command
    };
    // Logged (on standard output, as every log line) before anything starts.
    let refused = agent("ztunnel").output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("expected NAMESPACE/NAME"),
        "{refused:?}"
    );

    let child = KillOnDrop(agent("istio-system/ztunnel").spawn().unwrap());
    let started = std::time::Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < WAIT, "the agent never served ZDS");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fake.seen().is_empty(), "nothing asked before the stop");
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut child = child;
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", DAEMONSET)
    );
}

#[tokio::test]
async fn the_probe_rule_goes_into_the_iptables_variant_the_node_uses() {
    let node = TestNetns::new("zta-legacy");
    // kubelet's canary in the legacy tables: this node's rules live there.
    node.exec(&[
        "iptables-legacy",
        "-t",
        "mangle",
        "-N",
        "KUBE-KUBELET-CANARY",
    ]);
    let mut host = HostRules::new(
        node.open().into_fd(),
        std::sync::Arc::new(AgentMetrics::default()),
    );
    host.add(
        "Kubernetes//Pod/shop/web-1",
        &["10.77.3.2".parse().unwrap()],
    )
    .await;
    host.start().await;
    assert_eq!(host.failures(), 0);
    let legacy = node.exec(&["iptables-legacy-save", "-t", "nat"]);
    assert!(
        legacy.contains("-A ISTIO_POSTRT -d 10.77.3.2/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127"),
        "{legacy}"
    );
    assert!(
        legacy.contains("-A POSTROUTING -j ISTIO_POSTRT"),
        "{legacy}"
    );
    let nft = node.exec(&["iptables-nft-save", "-t", "nat"]);
    assert!(
        !nft.contains("ISTIO_POSTRT"),
        "nothing in nf_tables:\n{nft}"
    );

    host.remove_all().await;
    assert_eq!(host.failures(), 0);
    let legacy = node.exec(&["iptables-legacy-save", "-t", "nat"]);
    assert!(!legacy.contains("ISTIO_POSTRT"), "{legacy}");
}
