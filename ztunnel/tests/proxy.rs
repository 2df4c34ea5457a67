//! The pod data path end to end inside one process, on real network namespaces: two pods
//! joined by a veth pair, each with the in-pod redirection rules the node agent installs, each
//! with its own `PodProxy`, certificates from the controller's CA (in process, over loopback TLS,
//! asked as node1's ztunnel asks), and config set by hand.
//!
//! Needs root (namespaces, iptables). Every test builds its own uniquely named namespaces
//! and removes them when it ends, even on failure.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use api::security::{self as authz, Action, Authorization, Clause, Match, Rule, Scope};
use api::workload::{self as wl, address};
use hbone::{ConnectRequest, Identity, Pool, PoolSettings, SocketFactory, Upstream};
use http::StatusCode;
use proxy_core::identity::{CaClient, CertManager, CertSettings};
use proxy_core::state::ProxyState;
use proxy_core::telemetry::Metrics;
use test_support::control_plane::Controller;
use test_support::grpc::add_token;
use test_support::netns::TestNetns;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use ztunnel::agent::iptables;
use ztunnel::proxy::{PodContext, PodNetns, PodProxy, socket};

const TRUST_DOMAIN: &str = "cluster.local";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const ECHO_PORT: u16 = 8080;
/// Only guards against a hung test; nothing is asserted about how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// The node proxy's bearer token at the controller.
const TOKEN: &str = "ztunnel-node1";

/// One pod: its namespace and its proxy.
struct Pod {
    netns: Arc<PodNetns>,
    ip: IpAddr,
    proxy: Option<PodProxy>,
}

/// Two pods on one node: "sleep" in namespace `client` (10.77.0.1) and "echo" in namespace
/// `server` (10.77.0.2), both captured.
struct Mesh {
    client: Pod,
    server: Pod,
    state: ProxyState,
    controller: Controller,
    metrics: Arc<Metrics>,
    // Last: the namespaces (and the veth pair with them) outlive the proxies using them.
    _namespaces: [TestNetns; 2],
}

fn workload(name: &str, namespace: &str, ip: Ipv4Addr) -> wl::Address {
    wl::Address {
        r#type: Some(address::Type::Workload(wl::Workload {
            uid: uid(name, namespace),
            name: name.into(),
            namespace: namespace.into(),
            addresses: vec![ip.octets().to_vec()],
            tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
            trust_domain: TRUST_DOMAIN.into(),
            service_account: name.into(),
            node: "node1".into(),
            canonical_name: name.into(),
            canonical_revision: "v1".into(),
            workload_name: name.into(),
            cluster_id: "Kubernetes".into(),
            status: wl::WorkloadStatus::Healthy as i32,
            ..Default::default()
        })),
    }
}

fn uid(name: &str, namespace: &str) -> String {
    format!("Kubernetes//Pod/{namespace}/{name}")
}

impl Mesh {
    async fn new() -> Mesh {
        let namespaces = [TestNetns::new("zt-test-a"), TestNetns::new("zt-test-b")];
        let [a, b] = &namespaces;
        let peer = b.name();
        a.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer,
        ]);
        let state = ProxyState::new();
        let metrics = Metrics::new();
        // The controller's CA signs for node1's pods, asked as node1's ztunnel asks.
        let controller = Controller::builder()
            .token(
                TOKEN,
                "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
                Some("node1"),
            )
            .start()
            .await;
        let signer =
            CaClient::with_authorizer(controller.channel(), |request| add_token(request, TOKEN));
        let certs = CertManager::with_signer(Arc::new(signer), CertSettings::default());
        let mut pods = Vec::new();
        for (ns, ip, name, namespace) in [
            (a, CLIENT_IP, "sleep", "client"),
            (b, SERVER_IP, "echo", "server"),
        ] {
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
            let file = File::open(ns.path()).unwrap();
            iptables::install(file.as_fd(), &iptables::families_for(&[ip.into()]))
                .await
                .unwrap();
            state
                .apply_address(&uid(name, namespace), workload(name, namespace, ip))
                .unwrap();
            controller.pods.add("node1", namespace, name);
            let netns = Arc::new(PodNetns::new(file.into()));
            let proxy = PodProxy::start(PodContext {
                uid: uid(name, namespace),
                name: name.into(),
                namespace: namespace.into(),
                service_account: name.into(),
                netns: netns.clone(),
                node: "node1".into(),
                trust_domain: TRUST_DOMAIN.into(),
                state: state.clone(),
                certs: certs.clone(),
                metrics: metrics.clone(),
                limits: hbone::ServerLimits::default(),
                tap: Default::default(),
            })
            .await
            .unwrap();
            pods.push(Pod {
                netns,
                ip: ip.into(),
                proxy: Some(proxy),
            });
        }
        state.mark_synced();
        let server = pods.pop().unwrap();
        let client = pods.pop().unwrap();
        Mesh {
            client,
            server,
            state,
            controller,
            metrics,
            _namespaces: namespaces,
        }
    }

    /// A DENY policy for the whole mesh matching `matches`.
    fn deny(&self, name: &str, matches: Match) {
        let policy = Authorization {
            name: name.into(),
            namespace: "istio-system".into(),
            scope: Scope::Global as i32,
            action: Action::Deny as i32,
            rules: vec![Rule {
                clauses: vec![Clause {
                    matches: vec![matches],
                }],
            }],
            ..Default::default()
        };
        self.state
            .apply_authorization(&format!("istio-system/{name}"), policy)
            .unwrap();
    }

    /// A client certificate for `identity` from the mesh's CA.
    fn cert(&self, identity: &str) -> Arc<hbone::WorkloadCertificate> {
        let identity: Identity = identity.parse().unwrap();
        self.controller.issue(&identity)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Stop the proxies before the namespaces go.
        self.client.proxy.take();
        self.server.proxy.take();
    }
}

/// An application server in `pod`: greets each client with the address it sees, then echoes.
fn echo_server(pod: &Pod, port: u16) -> tokio::task::JoinHandle<()> {
    let listener = pod
        .netns
        .run(|| {
            let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, peer)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let greeting = format!("{}\n", socket::canonical(peer).ip());
                if stream.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    })
}

/// A connection from the application in `pod`, subject to the pod's redirection rules.
async fn dial(pod: &Pod, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = pod.netns.run(TcpSocket::new_v4)?;
    tokio::time::timeout(HANG_GUARD, socket.connect(to))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// A connection from the client pod's app to the echo server through both proxies, checked
/// to reach the app from the client pod's address.
async fn dial_echo(mesh: &Mesh) -> TcpStream {
    let to = SocketAddr::new(mesh.server.ip, ECHO_PORT);
    let mut stream = dial(&mesh.client, to).await.unwrap();
    assert_eq!(greeting(&mut stream).await.unwrap(), CLIENT_IP.to_string());
    stream
}

/// A connection from `pod` that its rules let through untouched (as a plaintext client).
async fn dial_plain(pod: &Pod, to: SocketAddr) -> io::Result<TcpStream> {
    tokio::time::timeout(HANG_GUARD, socket::connect(&pod.netns, to, None))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Reads the echo server's greeting: the client address it saw.
async fn greeting(stream: &mut TcpStream) -> io::Result<String> {
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(HANG_GUARD, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    Ok(line.trim().to_string())
}

async fn echo_round_trip(stream: &mut TcpStream, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    let mut back = vec![0; text.len()];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, text);
}

/// Waits until `stream` is closed by the other side (EOF or reset).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 64];
    matches!(
        tokio::time::timeout(HANG_GUARD, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(HANG_GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

/// An HBONE client dialing from inside `pod` (marked, so not captured again).
fn pool_in(pod: &Pod) -> Pool {
    let netns = pod.netns.clone();
    Pool::new(PoolSettings {
        socket_factory: Some(SocketFactory::new(move |peer| {
            socket::upstream_socket(&netns, peer, None)
        })),
        ..PoolSettings::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_goes_over_hbone_and_reaches_the_app_from_the_client_ip() {
    let mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    let mut stream = dial_echo(&mesh).await;
    echo_round_trip(&mut stream, b"hello through the mesh").await;
    let client_proxy = mesh.client.proxy.as_ref().unwrap();
    let server_proxy = mesh.server.proxy.as_ref().unwrap();
    assert_eq!(client_proxy.active_connections(), 1);
    assert_eq!(server_proxy.active_connections(), 1);
    drop(stream);
    until(|| client_proxy.active_connections() == 0 && server_proxy.active_connections() == 0)
        .await;
    let metrics = mesh.metrics.render();
    assert!(
        metrics.contains("istio_tcp_connections_opened_total"),
        "{metrics}"
    );
    assert!(metrics.contains("reporter=\"source\""), "{metrics}");
    assert!(metrics.contains("reporter=\"destination\""), "{metrics}");
    assert!(metrics.contains("mutual_tls"), "{metrics}");
    assert!(
        metrics.contains("spiffe://cluster.local/ns/client/sa/sleep"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_connects_are_checked_before_they_are_answered() {
    let mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    mesh.deny(
        "deny-9090",
        Match {
            destination_ports: vec![9090],
            ..Default::default()
        },
    );
    let pool = pool_in(&mesh.client);
    let cert = mesh.cert("spiffe://cluster.local/ns/client/sa/sleep");
    let upstream = Upstream {
        address: SocketAddr::new(mesh.server.ip, 15008),
        identities: vec!["spiffe://cluster.local/ns/server/sa/echo".parse().unwrap()],
        source_ip: None,
    };
    let status = |target: SocketAddr| {
        let (pool, cert, upstream) = (pool.clone(), cert.clone(), upstream.clone());
        async move {
            match pool
                .connect(&cert, &upstream, &ConnectRequest::new(target))
                .await
            {
                Ok(_) => StatusCode::OK,
                Err(e) => e.status().unwrap_or_else(|| panic!("{e}")),
            }
        }
    };
    // Denied by policy.
    assert_eq!(
        status(SocketAddr::new(mesh.server.ip, 9090)).await,
        StatusCode::UNAUTHORIZED
    );
    // Another pod's address: refused, this proxy is nobody's deputy.
    let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)), ECHO_PORT);
    assert_eq!(status(elsewhere).await, StatusCode::BAD_REQUEST);
    // Nothing listens there.
    assert_eq!(
        status(SocketAddr::new(mesh.server.ip, 8081)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // And the app itself.
    let tunnel = pool
        .connect(
            &cert,
            &upstream,
            &ConnectRequest::new(SocketAddr::new(mesh.server.ip, ECHO_PORT)),
        )
        .await
        .unwrap();
    let mut reader = BufReader::new(tunnel);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), CLIENT_IP.to_string());

    // Through the outbound path, a denied connection is closed without a byte.
    let mut stream = dial(&mesh.client, SocketAddr::new(mesh.server.ip, 9090))
        .await
        .unwrap();
    assert!(closed(&mut stream).await);
    let metrics = mesh.metrics.render();
    assert!(metrics.contains("DENY"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_destinations_waypoint_may_name_the_original_client() {
    let mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    // The sleep pod plays the echo pod's waypoint.
    let mut echo = workload("echo", "server", SERVER_IP);
    if let Some(address::Type::Workload(w)) = &mut echo.r#type {
        w.waypoint = Some(wl::GatewayAddress {
            destination: Some(wl::gateway_address::Destination::Address(
                wl::NetworkAddress {
                    network: String::new(),
                    address: CLIENT_IP.octets().to_vec(),
                },
            )),
            hbone_mtls_port: 15008,
        });
    }
    mesh.state
        .apply_address(&uid("echo", "server"), echo)
        .unwrap();
    let pool = pool_in(&mesh.client);
    let upstream = Upstream {
        address: SocketAddr::new(mesh.server.ip, 15008),
        identities: vec!["spiffe://cluster.local/ns/server/sa/echo".parse().unwrap()],
        source_ip: None,
    };
    // What the app sees when `identity` (from the sleep pod's address) names another client.
    let seen_by_app = |identity: &str| {
        let (pool, cert, upstream) = (pool.clone(), mesh.cert(identity), upstream.clone());
        async move {
            let mut request = ConnectRequest::new(SocketAddr::new(mesh.server.ip, ECHO_PORT));
            request.forwarded_for = Some("10.77.0.9:41234".parse().unwrap());
            let tunnel = pool.connect(&cert, &upstream, &request).await.unwrap();
            let mut line = String::new();
            tokio::time::timeout(HANG_GUARD, BufReader::new(tunnel).read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            line.trim().to_string()
        }
    };
    assert_eq!(
        seen_by_app("spiffe://cluster.local/ns/client/sa/sleep").await,
        "10.77.0.9"
    );
    // Another identity from the waypoint's address is not the waypoint.
    assert_eq!(
        seen_by_app("spiffe://cluster.local/ns/client/sa/other").await,
        CLIENT_IP.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_closes_live_connections_it_now_denies() {
    let mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    let mut stream = dial_echo(&mesh).await;
    echo_round_trip(&mut stream, b"before").await;
    mesh.deny(
        "deny-sleep",
        Match {
            principals: vec![authz::StringMatch {
                match_type: Some(authz::string_match::MatchType::Exact(
                    // Istio's principals omit the scheme.
                    "cluster.local/ns/client/sa/sleep".into(),
                )),
            }],
            ..Default::default()
        },
    );
    assert!(closed(&mut stream).await);
    let server_proxy = mesh.server.proxy.as_ref().unwrap();
    until(|| server_proxy.active_connections() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_newly_selected_by_a_deny_policy_loses_the_connections_it_denies() {
    let mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    let mut stream = dial_echo(&mesh).await;
    // A selector policy that selects no pod yet changes nothing.
    let deny_all = Authorization {
        name: "deny-all".into(),
        namespace: "server".into(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        rules: vec![Rule { clauses: vec![] }],
        ..Default::default()
    };
    mesh.state
        .apply_authorization("server/deny-all", deny_all)
        .unwrap();
    echo_round_trip(&mut stream, b"still allowed").await;
    // The controller now says it selects the server pod: only the workload changes.
    let mut selected = workload("echo", "server", SERVER_IP);
    if let Some(address::Type::Workload(w)) = &mut selected.r#type {
        w.authorization_policies = vec!["server/deny-all".into()];
    }
    mesh.state
        .apply_address(&uid("echo", "server"), selected)
        .unwrap();
    assert!(closed(&mut stream).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_inbound_passes_unless_mtls_is_strict() {
    let mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    let target = SocketAddr::new(mesh.server.ip, ECHO_PORT);
    let mut stream = dial_plain(&mesh.client, target).await.unwrap();
    assert_eq!(greeting(&mut stream).await.unwrap(), CLIENT_IP.to_string());
    echo_round_trip(&mut stream, b"plain").await;
    drop(stream);

    // STRICT PeerAuthentication, as the controller converts it: deny without identity.
    mesh.deny(
        "istio_converted_static_strict",
        Match {
            not_principals: vec![authz::StringMatch {
                match_type: Some(authz::string_match::MatchType::Presence(())),
            }],
            ..Default::default()
        },
    );
    let mut stream = dial_plain(&mesh.client, target).await.unwrap();
    assert!(closed(&mut stream).await);
    // Mutual TLS still passes.
    dial_echo(&mesh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_listening_and_cuts_what_remains_at_the_deadline() {
    let mut mesh = Mesh::new().await;
    let _echo = echo_server(&mesh.server, ECHO_PORT);
    let mut stream = dial_echo(&mesh).await;
    let server_proxy = mesh.server.proxy.take().unwrap();
    tokio::time::timeout(HANG_GUARD, server_proxy.drain(Duration::from_millis(100)))
        .await
        .unwrap();
    assert!(closed(&mut stream).await);
    // Nothing listens on 15008 any more.
    let refused = dial_plain(&mesh.client, SocketAddr::new(mesh.server.ip, 15008)).await;
    assert!(refused.is_err());
}
