//! In-process pieces around the waypoint's transport: a controller (CA and xDS over
//! loopback TLS), an HBONE "endpoint" that serves HTTP and echoes TCP inside its tunnels, and
//! an HBONE client.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::waypoint as wp;
use api::workload::{self as wl, NetworkAddress, PortList, address};
use bytes::Bytes;
use controller::translate::{Resource, Snapshot};
use hbone::{ConnectHandler, ConnectRequest, Identity, IncomingConnect, WorkloadCertificate};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_core::control::ControlPlane;
use proxy_core::identity::{CaClient, CertManager, CertSettings};
use proxy_core::settings::ControlPlaneSettings;
use proxy_core::state::ProxyState;
use proxy_core::xds::{ClientIdentity, NamedSubscription};
use test_support::control_plane;
use test_support::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use waypoint::transport::InboundSettings;
use waypoint::transport::detect::{Detected, Prefixed, detect};

pub const TD: &str = "cluster.local";
pub const NS: &str = "shop";
pub const GATEWAY: &str = "waypoint";
pub const HOST: &str = "orders.shop.svc.cluster.local";
/// The orders service's virtual IP.
pub const VIP: &str = "10.96.0.10";
/// Service ports: HTTP and opaque TCP.
pub const HTTP_PORT: u16 = 80;
pub const TCP_PORT: u16 = 9000;
/// Target ports on the pod.
pub const HTTP_TARGET: u16 = 8080;
pub const TCP_TARGET: u16 = 9000;
/// A port declared without a protocol (the waypoint detects), same number on the pod.
pub const SNIFFED_PORT: u16 = 7070;
pub const ORDERS_UID: &str = "Kubernetes//Pod/shop/orders-v1";
const TOKEN: &str = "waypoint-shop-token";

pub fn identity(namespace: &str, service_account: &str) -> Identity {
    Identity::new(TD, namespace, service_account).unwrap()
}

pub fn waypoint_identity() -> Identity {
    identity(NS, GATEWAY)
}

/// The controller, serving a snapshot that tests replace, with the waypoint as its caller.
pub struct Controller {
    endpoint: control_plane::Controller,
}

impl Controller {
    /// Serves `snapshot` on an ephemeral loopback port; the waypoint's token is known.
    pub async fn start(snapshot: Snapshot) -> Self {
        let endpoint = control_plane::Controller::builder()
            .token(TOKEN, &waypoint_identity().to_string(), None)
            .snapshot(Arc::new(snapshot))
            .start()
            .await;
        Self { endpoint }
    }

    /// How the waypoint reaches this controller.
    pub fn control_config(&self) -> ControlPlaneSettings {
        ControlPlaneSettings {
            address: self.endpoint.addr.to_string(),
            root_cert: self.endpoint.root_cert(),
            token_file: Some(self.endpoint.token_file(TOKEN)),
            server_identity: control_plane::controller_identity().to_string(),
            learned_roots: Default::default(),
        }
    }

    /// Replaces what is served.
    pub fn publish(&self, snapshot: Snapshot) {
        self.endpoint.publish(Arc::new(snapshot));
    }

    /// A certificate for `identity`, from this controller's CA.
    pub fn issue(&self, identity: &Identity) -> Arc<WorkloadCertificate> {
        self.endpoint.issue(identity)
    }

    /// The waypoint's certificate manager: its own identity, over the real CA service.
    pub async fn cert_manager(&self) -> Arc<CertManager> {
        let control = ControlPlane::connect(&self.control_config()).await.unwrap();
        CertManager::with_signer(
            Arc::new(CaClient::own_identity(control)),
            CertSettings::default(),
        )
    }

    /// Runs the xDS client into `state` (plus `named`), until the returned sender fires.
    pub fn run_xds(
        &self,
        state: ProxyState,
        named: Vec<NamedSubscription>,
    ) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (stop, stopped) = watch::channel(false);
        let client = ClientIdentity {
            node_id: format!("router~127.0.0.1~{GATEWAY}-1.{NS}~{NS}.svc.cluster.local"),
            node_name: String::new(),
            cluster_id: "Kubernetes".into(),
        };
        let task = tokio::spawn(proxy_core::xds::run_with(
            self.control_config(),
            client,
            state,
            named,
            stopped,
        ));
        (stop, task)
    }
}

fn ip_bytes(ip: &str) -> Vec<u8> {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn resource(body: api::prost_types::Any) -> Resource {
    Resource {
        version: format!("{:x}", fastrand::u64(..)),
        body,
    }
}

/// The orders service and its one pod (at `pod_ip`, meshed), as the workload API says.
pub fn address_resources(pod_ip: &str) -> Vec<(String, Resource)> {
    let ports = vec![
        wl::Port {
            service_port: HTTP_PORT.into(),
            target_port: HTTP_TARGET.into(),
        },
        wl::Port {
            service_port: TCP_PORT.into(),
            target_port: TCP_TARGET.into(),
        },
        wl::Port {
            service_port: SNIFFED_PORT.into(),
            target_port: SNIFFED_PORT.into(),
        },
    ];
    let service = wl::Address {
        r#type: Some(address::Type::Service(wl::Service {
            name: "orders".into(),
            namespace: NS.into(),
            hostname: HOST.into(),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: ip_bytes(VIP),
            }],
            ports: ports.clone(),
            ..Default::default()
        })),
    };
    let workload = wl::Address {
        r#type: Some(address::Type::Workload(wl::Workload {
            uid: ORDERS_UID.into(),
            name: "orders-v1".into(),
            namespace: NS.into(),
            addresses: vec![ip_bytes(pod_ip)],
            tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
            service_account: "orders".into(),
            trust_domain: TD.into(),
            services: [(format!("{NS}/{HOST}"), PortList { ports })].into(),
            ..Default::default()
        })),
    };
    vec![
        (format!("{NS}/{HOST}"), resource(api::pack(&service))),
        (ORDERS_UID.into(), resource(api::pack(&workload))),
    ]
}

/// The waypoint config: orders with an HTTP port routed to itself and a TCP port, and the
/// given authorization policies.
pub fn waypoint_config(policies: Vec<wp::AuthorizationPolicy>) -> wp::Waypoint {
    let forward = wp::Forward {
        destinations: vec![wp::WeightedDestination {
            destination: Some(wp::Destination {
                hostname: HOST.into(),
                namespace: NS.into(),
                // The port the request arrived on.
                port: 0,
                ..Default::default()
            }),
            weight: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    wp::Waypoint {
        name: GATEWAY.into(),
        namespace: NS.into(),
        services: vec![wp::Service {
            hostname: HOST.into(),
            namespace: NS.into(),
            name: "orders".into(),
            addresses: vec![VIP.into()],
            ports: vec![
                wp::Port {
                    name: "http".into(),
                    port: HTTP_PORT.into(),
                    target_port: HTTP_TARGET.into(),
                    protocol: wp::Protocol::Http as i32,
                },
                wp::Port {
                    name: "tcp".into(),
                    port: TCP_PORT.into(),
                    target_port: TCP_TARGET.into(),
                    protocol: wp::Protocol::Tcp as i32,
                },
                wp::Port {
                    name: "other".into(),
                    port: SNIFFED_PORT.into(),
                    target_port: SNIFFED_PORT.into(),
                    protocol: wp::Protocol::Unspecified as i32,
                },
            ],
            routes: vec![wp::Route {
                name: "default".into(),
                action: Some(wp::route::Action::Forward(forward)),
                ..Default::default()
            }],
            rate_limit: None,
            telemetry: None,
            tcp_routes: Vec::new(),
        }],
        destinations: vec![wp::DestinationPolicy {
            hostname: HOST.into(),
            namespace: NS.into(),
            traffic_policy: Some(wp::TrafficPolicy::default()),
            ..Default::default()
        }],
        authorization_policies: policies,
        ..Default::default()
    }
}

/// A config the engine must refuse: a route matching on an invalid regular expression.
pub fn broken_config() -> wp::Waypoint {
    let mut config = waypoint_config(Vec::new());
    config.services[0].routes[0].matches = vec![wp::RouteMatch {
        path: Some(wp::PathMatch {
            kind: Some(wp::path_match::Kind::Regex("([unclosed".into())),
            ignore_case: false,
        }),
        ..Default::default()
    }];
    config
}

/// A snapshot with the workload API resources and, if given, the waypoint config.
pub fn snapshot(pod_ip: &str, config: Option<&wp::Waypoint>) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.resources.insert(
        api::ADDRESS_TYPE_URL.into(),
        address_resources(pod_ip).into_iter().collect(),
    );
    snapshot
        .resources
        .insert(api::AUTHORIZATION_TYPE_URL.into(), Default::default());
    if let Some(config) = config {
        snapshot.resources.insert(
            api::WAYPOINT_TYPE_URL.into(),
            [(format!("{NS}/{GATEWAY}"), resource(api::pack(config)))].into(),
        );
    }
    snapshot
}

/// What the endpoint saw of one tunnel.
#[derive(Clone, Debug)]
pub struct Seen {
    pub authority: SocketAddr,
    pub forwarded: Option<String>,
    pub peer: Identity,
}

#[derive(Default)]
struct EndpointLog {
    tunnels: Mutex<Vec<Seen>>,
    requests: Mutex<Vec<String>>,
    /// Released by tests to let `/slow` answer.
    release: Notify,
}

/// An HBONE endpoint: its "pod" serves HTTP on [`HTTP_TARGET`] and echoes bytes on
/// [`TCP_TARGET`] inside each tunnel.
pub struct Endpoint {
    pub addr: SocketAddr,
    log: Arc<EndpointLog>,
    stop: watch::Sender<bool>,
}

impl Endpoint {
    /// Serves as the orders pod (identity shop/orders) on a loopback port.
    pub async fn start(controller: &Controller) -> Self {
        let cert = controller.issue(&identity(NS, "orders"));
        let config = Arc::new(hbone::tls::server_config(&cert).unwrap());
        let log = Arc::new(EndpointLog::default());
        let (server, _updater) =
            hbone::Server::new(config, EndpointHandler(log.clone()), Duration::from_secs(1));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(server.run(listener, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        Self { addr, log, stop }
    }

    pub fn tunnels(&self) -> Vec<Seen> {
        self.log.tunnels.lock().unwrap().clone()
    }

    /// `METHOD path version` of each HTTP request served, followed by ` x-request-id` when
    /// it carried one.
    pub fn requests(&self) -> Vec<String> {
        self.log.requests.lock().unwrap().clone()
    }

    /// Lets one `/slow` request answer.
    pub fn release_slow(&self) {
        self.log.release.notify_one();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

struct EndpointHandler(Arc<EndpointLog>);

impl ConnectHandler for EndpointHandler {
    fn handle(&self, connect: IncomingConnect) -> impl Future<Output = ()> + Send {
        let log = self.0.clone();
        async move {
            log.tunnels.lock().unwrap().push(Seen {
                authority: connect.authority,
                forwarded: connect
                    .headers
                    .get("forwarded")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                peer: connect.peer_identity.clone(),
            });
            let port = connect.authority.port();
            let Ok(mut tunnel) = connect.accept() else {
                return;
            };
            let mut prefix = Vec::new();
            let detected = if port == TCP_TARGET {
                Detected::Opaque
            } else {
                match detect(&mut tunnel, &mut prefix).await {
                    Ok(detected) => detected,
                    Err(_) => return,
                }
            };
            let stream = Prefixed::new(prefix, tunnel);
            if matches!(detected, Detected::Opaque | Detected::Empty) {
                echo(stream).await;
                return;
            }
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let log = log.clone();
                async move { Ok::<_, Infallible>(answer(&log, request).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        }
    }
}

/// `orders-v1 METHOD path version`, after `/slow` waits to be released; with
/// ` upgrade=PROTOCOL` (and ` key` with a WebSocket key) when the request asks for an upgrade,
/// which `/upgrade` accepts (101, then an echo of the upgraded stream).
async fn answer(log: &EndpointLog, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut line = format!(
        "{} {} {:?}",
        request.method(),
        request.uri().path(),
        request.version()
    );
    let upgrade = request.headers().get(http::header::UPGRADE).cloned();
    if let Some(protocol) = &upgrade {
        line.push_str(&format!(" upgrade={}", protocol.to_str().unwrap_or("?")));
        if request
            .headers()
            .contains_key(http::header::SEC_WEBSOCKET_KEY)
        {
            line.push_str(" key");
        }
    }
    // The log notes requests that came through the engine (it adds a request id).
    let marked = if request.headers().contains_key("x-request-id") {
        format!("{line} x-request-id")
    } else {
        line.clone()
    };
    log.requests.lock().unwrap().push(marked);
    if request.uri().path() == "/slow" {
        log.release.notified().await;
    }
    if let Some(protocol) = upgrade
        && request.uri().path() == "/upgrade"
    {
        let upgrading = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrading.await {
                echo(TokioIo::new(upgraded)).await;
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        headers.insert(http::header::UPGRADE, protocol);
        return response;
    }
    Response::new(Full::new(Bytes::from(format!("orders-v1 {line}"))))
}

/// Writes back what it reads until the end of the stream, then shuts its side down.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

/// Opens a tunnel through the waypoint at `waypoint` to `target`, as `client` (sleep's
/// identity), claiming to carry the connection of `forwarded`.
pub async fn tunnel(
    controller: &Controller,
    waypoint: SocketAddr,
    target: SocketAddr,
    forwarded: SocketAddr,
) -> Result<hbone::TunnelStream, hbone::Error> {
    let cert = controller.issue(&identity(NS, "sleep"));
    let peer = hbone::Upstream {
        address: waypoint,
        identities: vec![waypoint_identity()],
        source_ip: None,
    };
    let mut request = ConnectRequest::new(target);
    request.forwarded_for = Some(forwarded);
    hbone::Pool::default().connect(&cert, &peer, &request).await
}

/// An HTTP/1.1 GET on `stream`: status and body.
pub async fn get_http1(stream: hbone::TunnelStream, path: &str) -> (u16, String) {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(http::header::HOST, HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    read(sender.send_request(request).await.unwrap()).await
}

/// An HTTP/2 (prior knowledge) GET on `stream`: status and body.
pub async fn get_http2(stream: hbone::TunnelStream, path: &str) -> (u16, String) {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get(format!("http://{HOST}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    read(sender.send_request(request).await.unwrap()).await
}

async fn read(response: Response<Incoming>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The waypoint's transport, running against a [`Controller`] and sending to an
/// [`Endpoint`].
pub struct Waypoint {
    pub addr: SocketAddr,
    pub state: ProxyState,
    pub certs: Arc<CertManager>,
    pub store: Arc<waypoint::transport::ConfigStore>,
    pub readiness: proxy_core::readiness::Readiness,
    pub metrics: Arc<proxy_core::telemetry::Metrics>,
    drain: watch::Sender<bool>,
    xds_stop: watch::Sender<bool>,
    pub server: Option<JoinHandle<Result<hbone::DrainReport, waypoint::transport::ServeError>>>,
}

impl Waypoint {
    /// Starts and waits until it is ready (workloads synced, config applied, certificate).
    pub async fn start(controller: &Controller, endpoint: &Endpoint) -> Self {
        Self::start_with(controller, endpoint, InboundSettings::default()).await
    }

    /// As [`Waypoint::start`], serving tunnels with `settings`.
    pub async fn start_with(
        controller: &Controller,
        endpoint: &Endpoint,
        settings: InboundSettings,
    ) -> Self {
        use waypoint::transport::{
            ConfigStore, HboneUpstream, Inbound, UpstreamSettings, serve_hbone,
        };
        let readiness = proxy_core::readiness::Readiness::new();
        let state = ProxyState::new();
        let certs = controller.cert_manager().await;
        let id = waypoint_identity();
        certs.prefetch(&id);
        let runtime = waypoint::engine::Runtime::new();
        let store = ConfigStore::new(NS, GATEWAY, runtime, &readiness).unwrap();
        let (xds_stop, _xds) = controller.run_xds(state.clone(), vec![store.subscription()]);
        let metrics = proxy_core::telemetry::Metrics::for_component("waypoint");
        let upstream = HboneUpstream::new(
            state.clone(),
            certs.clone(),
            id.clone(),
            UpstreamSettings {
                hbone_port: endpoint.addr.port(),
                ..UpstreamSettings::default()
            },
        );
        let (drain, draining) = watch::channel(false);
        let inbound = Inbound::new(
            store.clone(),
            upstream,
            metrics.clone(),
            settings,
            draining.clone(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_hbone(
            inbound,
            certs.clone(),
            id,
            listener,
            Duration::from_secs(30),
            draining,
        ));
        let waypoint = Self {
            addr,
            state,
            certs,
            store,
            readiness,
            metrics,
            drain,
            xds_stop,
            server: Some(server),
        };
        eventually("the waypoint to be ready", || waypoint.is_ready()).await;
        waypoint
    }

    pub fn is_ready(&self) -> bool {
        self.state.is_synced() && self.certs.all_ready() && self.readiness.pending().is_empty()
    }

    /// Starts draining (as on SIGTERM).
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        self.xds_stop.send_replace(true);
        self.drain.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
