//! The waypoint's transport over real TLS and HBONE on loopback: an in-process controller
//! issues the certificates (the waypoint's own, without impersonation) and serves the
//! workloads and the waypoint config over xDS; an HBONE client sends CONNECTs to the
//! waypoint, which forwards over HBONE to an in-process endpoint.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;

use api::waypoint as wp;
use bytes::Bytes;
use harness::*;
use http_body_util::{BodyExt, Full};
use proxy_core::state::ProxyState;
use test_support::raw_http::{self, Reply};
use test_support::wait::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::engine::{Caller, EndpointInfo, UpstreamClient, UpstreamError, UpstreamHints};
use waypoint::transport::{HboneUpstream, UpstreamSettings};

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.parse().unwrap(), port)
}

/// The client pod's address, as its ztunnel puts it in `forwarded`.
fn client_addr() -> SocketAddr {
    "10.1.2.3:40000".parse().unwrap()
}

fn body(text: &'static str) -> waypoint::engine::Body {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|e| match e {})
        .boxed()
}

async fn send(
    upstream: &HboneUpstream,
    endpoint: &EndpointInfo,
    caller: &Caller,
    version: http::Version,
    path: &str,
) -> (u16, String) {
    let uri = if version == http::Version::HTTP_2 {
        format!("http://{HOST}{path}")
    } else {
        path.to_owned()
    };
    let request = http::Request::get(uri)
        .version(version)
        .header(http::header::HOST, HOST)
        .body(body(""))
        .unwrap();
    let response = upstream.send(endpoint, caller, request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn upstream_sends_over_hbone_as_the_waypoint_with_the_callers_address() {
    let controller = Controller::start(snapshot("127.0.0.1", None)).await;
    let endpoint = Endpoint::start(&controller).await;
    let certs = controller.cert_manager().await;
    // The controller's CA grants the waypoint its own identity.
    let cert = certs.fetch(&waypoint_identity()).await.unwrap();
    assert_eq!(cert.identity(), &waypoint_identity());
    let state = ProxyState::new();
    let (stop, xds) = controller.run_xds(state.clone(), Vec::new());
    eventually("workloads", || state.is_synced()).await;

    let upstream = HboneUpstream::new(
        state.clone(),
        certs,
        waypoint_identity(),
        UpstreamSettings {
            hbone_port: endpoint.addr.port(),
            ..UpstreamSettings::default()
        },
    );
    assert_eq!(
        upstream.service_by_vip(VIP.parse().unwrap()),
        Some((NS.to_owned(), HOST.to_owned()))
    );
    let endpoints = upstream.endpoints(NS, HOST, HTTP_PORT);
    let orders = EndpointInfo {
        uid: ORDERS_UID.into(),
        address: "127.0.0.1:8080".parse().unwrap(),
    };
    assert_eq!(endpoints, std::slice::from_ref(&orders));
    assert!(upstream.endpoints(NS, HOST, 81).is_empty());
    assert!(
        upstream
            .endpoints(NS, "nope.shop.svc.cluster.local", 80)
            .is_empty()
    );

    let caller = Caller {
        identity: Some(identity(NS, "sleep")),
        ip: client_addr().ip(),
    };
    // HTTP/1.1 requests reuse one connection (one tunnel) once each response is read.
    for path in ["/a", "/b", "/c"] {
        let (status, text) = send(&upstream, &orders, &caller, http::Version::HTTP_11, path).await;
        assert_eq!(status, 200);
        assert_eq!(text, format!("orders-v1 GET {path} HTTP/1.1"));
    }
    assert_eq!(endpoint.tunnels().len(), 1, "{:?}", endpoint.tunnels());
    // HTTP/2 requests stay HTTP/2 and share their own connection.
    for _ in 0..2 {
        let (status, text) = send(&upstream, &orders, &caller, http::Version::HTTP_2, "/h2").await;
        assert_eq!((status, text.as_str()), (200, "orders-v1 GET /h2 HTTP/2.0"));
    }
    assert_eq!(endpoint.tunnels().len(), 2);
    // Another caller never shares a tunnel that carries someone else's address.
    let other = Caller {
        identity: None,
        ip: "10.1.2.4".parse().unwrap(),
    };
    let (status, _) = send(&upstream, &orders, &other, http::Version::HTTP_11, "/d").await;
    assert_eq!(status, 200);

    let tunnels = endpoint.tunnels();
    assert_eq!(tunnels.len(), 3);
    for (i, seen) in tunnels.iter().enumerate() {
        assert_eq!(seen.authority, orders.address);
        assert_eq!(
            seen.peer,
            waypoint_identity(),
            "the waypoint's own identity"
        );
        let expected = if i < 2 { "10.1.2.3" } else { "10.1.2.4" };
        // The caller's port is not known to the waypoint: the bare IP.
        assert_eq!(
            seen.forwarded.as_deref(),
            Some(format!("for={expected}").as_str())
        );
    }
    assert!(upstream.pooled_connections() >= 2);

    // An endpoint nobody knows is a connect error, not a hang.
    let unknown = EndpointInfo {
        uid: "Kubernetes//Pod/shop/gone".into(),
        address: "127.0.0.9:8080".parse().unwrap(),
    };
    let request = http::Request::get("/").body(body("")).unwrap();
    let error = upstream.send(&unknown, &caller, request).await.unwrap_err();
    assert!(matches!(error, UpstreamError::Connect(_)), "{error}");

    stop.send_replace(true);
    xds.await.unwrap();
}

#[tokio::test]
async fn a_configured_connect_timeout_bounds_the_dial() {
    let controller = Controller::start(snapshot("127.0.0.1", None)).await;
    let certs = controller.cert_manager().await;
    let state = ProxyState::new();
    let (stop, xds) = controller.run_xds(state.clone(), Vec::new());
    eventually("workloads", || state.is_synced()).await;
    // Takes TCP connections (the kernel does) and never answers the TLS handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = HboneUpstream::new(
        state,
        certs,
        waypoint_identity(),
        UpstreamSettings {
            hbone_port: silent.local_addr().unwrap().port(),
            ..UpstreamSettings::default()
        },
    );
    let orders = EndpointInfo {
        uid: ORDERS_UID.into(),
        address: "127.0.0.1:8080".parse().unwrap(),
    };
    let caller = Caller {
        identity: None,
        ip: client_addr().ip(),
    };
    let mut request = http::Request::get("/")
        .header(http::header::HOST, HOST)
        .body(body(""))
        .unwrap();
    request.extensions_mut().insert(UpstreamHints {
        max_requests_per_connection: 0,
        connect_timeout: Some(std::time::Duration::from_millis(200)),
    });
    let sent = upstream.send(&orders, &caller, request);
    let error = tokio::time::timeout(std::time::Duration::from_secs(60), sent)
        .await
        .expect("the dial ends")
        .unwrap_err();
    // The configured limit ends it, not the HBONE handshake's own (longer) one.
    assert!(
        matches!(&error, UpstreamError::Connect(m) if m == "connecting to 127.0.0.1:8080: timed out"),
        "{error}"
    );
    drop(silent);
    stop.send_replace(true);
    xds.await.unwrap();
}

#[tokio::test]
async fn http1_and_http2_requests_go_through_the_waypoint() {
    let config = waypoint_config(Vec::new());
    let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
    let endpoint = Endpoint::start(&controller).await;
    let waypoint = Waypoint::start(&controller, &endpoint).await;
    assert_eq!(waypoint.store.dump()["accepted"], 1);

    let stream = tunnel(&controller, waypoint.addr, vip(HTTP_PORT), client_addr())
        .await
        .unwrap();
    let (status, text) = get_http1(stream, "/hello").await;
    assert_eq!(
        (status, text.as_str()),
        (200, "orders-v1 GET /hello HTTP/1.1")
    );

    let stream = tunnel(&controller, waypoint.addr, vip(HTTP_PORT), client_addr())
        .await
        .unwrap();
    let (status, text) = get_http2(stream, "/h2").await;
    assert_eq!((status, text.as_str()), (200, "orders-v1 GET /h2 HTTP/2.0"));

    let tunnels = endpoint.tunnels();
    assert_eq!(tunnels.len(), 2, "{tunnels:?}");
    for seen in tunnels {
        assert_eq!(seen.authority, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(seen.peer, waypoint_identity());
        let forwarded = seen.forwarded.unwrap_or_default();
        assert!(forwarded.contains("10.1.2.3"), "{forwarded}");
    }
}

#[tokio::test]
async fn tcp_ports_pass_through_with_l4_policy() {
    let deny_sleep = wp::AuthorizationPolicy {
        name: "deny-sleep".into(),
        namespace: NS.into(),
        action: wp::AuthorizationAction::Deny as i32,
        scope: wp::PolicyScope::Waypoint as i32,
        rules: vec![wp::AuthorizationRule {
            from: vec![wp::Source {
                principals: vec![wp::StringMatch {
                    kind: Some(wp::string_match::Kind::Exact(format!(
                        "{TD}/ns/{NS}/sa/sleep"
                    ))),
                    ignore_case: false,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let config = waypoint_config(Vec::new());
    let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
    let endpoint = Endpoint::start(&controller).await;
    let waypoint = Waypoint::start(&controller, &endpoint).await;

    let mut stream = tunnel(&controller, waypoint.addr, vip(TCP_PORT), client_addr())
        .await
        .unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let seen = endpoint.tunnels();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authority, "127.0.0.1:9000".parse().unwrap());
    assert!(
        seen[0]
            .forwarded
            .as_deref()
            .unwrap_or_default()
            .contains("10.1.2.3")
    );
    let metrics = Arc::clone(&waypoint.metrics);
    eventually("the connection to be counted", || {
        metrics.render().lines().any(|line| {
            line.starts_with("istio_tcp_connections_closed_total{")
                && line.contains("reporter=\"waypoint\"")
                && line.contains(&format!("destination_service=\"{HOST}\""))
                && line.ends_with(" 1")
        })
    })
    .await;

    // A DENY policy for the caller refuses the tunnel before it is answered.
    controller.publish(snapshot(
        "127.0.0.1",
        Some(&waypoint_config(vec![deny_sleep])),
    ));
    let store = waypoint.store.clone();
    eventually("the policy", || store.dump()["accepted"] == 2).await;
    let refused = tunnel(&controller, waypoint.addr, vip(TCP_PORT), client_addr()).await;
    match refused {
        Err(hbone::Error::Status(status)) => assert_eq!(status, http::StatusCode::UNAUTHORIZED),
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(endpoint.tunnels().len(), 1, "nothing reached the endpoint");
    eventually("the refusal to be counted", || {
        metrics.render().lines().any(|line| {
            line.starts_with("istio_tcp_connections_closed_total{")
                && line.contains("response_flags=\"DENY\"")
                && line.ends_with(" 1")
        })
    })
    .await;
}

#[tokio::test]
async fn a_refused_config_keeps_the_previous_one_in_force() {
    let config = waypoint_config(Vec::new());
    let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
    let endpoint = Endpoint::start(&controller).await;
    let waypoint = Waypoint::start(&controller, &endpoint).await;

    controller.publish(snapshot("127.0.0.1", Some(&broken_config())));
    let store = waypoint.store.clone();
    eventually("the refusal", || !store.dump()["last_error"].is_null()).await;
    assert_eq!(store.dump()["accepted"], 1);

    let stream = tunnel(&controller, waypoint.addr, vip(HTTP_PORT), client_addr())
        .await
        .unwrap();
    let (status, text) = get_http1(stream, "/still").await;
    assert_eq!(
        (status, text.as_str()),
        (200, "orders-v1 GET /still HTTP/1.1")
    );
}

#[tokio::test]
async fn draining_lets_in_flight_requests_finish() {
    let config = waypoint_config(Vec::new());
    let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
    let endpoint = Endpoint::start(&controller).await;
    let mut waypoint = Waypoint::start(&controller, &endpoint).await;

    let stream = tunnel(&controller, waypoint.addr, vip(HTTP_PORT), client_addr())
        .await
        .unwrap();
    let slow = tokio::spawn(get_http1(stream, "/slow"));
    eventually("the request to reach the endpoint", || {
        endpoint.requests().iter().any(|r| r.contains("/slow"))
    })
    .await;
    waypoint.drain();
    // New tunnels are refused once the listener is closed.
    let addr = waypoint.addr;
    eventually("the listener to close", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    endpoint.release_slow();
    let (status, text) = slow.await.unwrap();
    assert_eq!(
        (status, text.as_str()),
        (200, "orders-v1 GET /slow HTTP/1.1")
    );
    let report = waypoint.server.take().unwrap().await.unwrap().unwrap();
    assert_eq!(report.aborted, 0, "{report:?}");
}

#[tokio::test]
async fn the_assembled_waypoint_reports_readiness_metrics_and_config() {
    use waypoint::app::{Listeners, WaypointSettings, serve};

    let config = waypoint_config(Vec::new());
    let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = WaypointSettings {
        namespace: NS.into(),
        name: GATEWAY.into(),
        service_account: GATEWAY.into(),
        control: controller.control_config(),
        hbone_addr: any_port,
        mesh: proxy_core::settings::MeshProxySettings {
            cluster_id: "Kubernetes".into(),
            trust_domain: TD.into(),
            endpoints: proxy_core::settings::AdminAddresses {
                admin: any_port,
                metrics: any_port,
                ready: any_port,
            },
            cert_ttl: std::time::Duration::from_secs(3600),
            drain_deadline: std::time::Duration::from_secs(5),
            limits: hbone::ServerLimits::default(),
        },
    };
    let listeners = Listeners::bind(&settings).await.unwrap();
    let hbone = listeners.hbone.local_addr().unwrap();
    let admin = listeners.admin.admin.local_addr().unwrap();
    let metrics = listeners.admin.metrics.local_addr().unwrap();
    let ready = listeners.admin.ready.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(settings, listeners, async move {
        let _ = stopped.await;
    }));

    let mut attempts = 0;
    loop {
        let Reply { status, body, .. } = raw_http::get(ready, "/healthz/ready").await;
        if status == 200 {
            break;
        }
        attempts += 1;
        assert!(attempts < 500, "never ready: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The pod's ztunnel is not there (nothing takes HBONE on 127.0.0.1:15008 with this
    // mesh's CA): the request fails upstream and is counted.
    let stream = tunnel(&controller, hbone, vip(HTTP_PORT), client_addr())
        .await
        .unwrap();
    let (status, _) = get_http1(stream, "/counted").await;
    assert_eq!(status, 503);

    let Reply {
        status, body: text, ..
    } = raw_http::get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE istio_tcp_connections_opened_total counter"));
    let requests = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"503\""))
        .unwrap_or_else(|| panic!("no request metric in:\n{text}"));
    assert!(requests.ends_with(" 1"), "{requests}");
    for listener in ["hbone", "http"] {
        let series = format!(
            "waypoint_connections_closed_total{{listener=\"{listener}\",reason=\"idle\"}} 0"
        );
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }

    let Reply {
        status, body: text, ..
    } = raw_http::get(admin, "/config_dump").await;
    assert_eq!(status, 200);
    assert!(!text.contains("PRIVATE KEY"));
    let dump: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dump["extra"]["waypoint"]["accepted"], 1, "{dump}");
    assert_eq!(dump["extra"]["waypoint"]["services"][0]["hostname"], HOST);
    assert_eq!(
        dump["certificates"][0]["identity"],
        waypoint_identity().to_string()
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(hbone).await.is_err());
}

#[tokio::test]
async fn undeclared_ports_detect_http_else_pass_bytes_through() {
    let config = waypoint_config(Vec::new());
    let controller = Controller::start(snapshot("127.0.0.1", Some(&config))).await;
    let endpoint = Endpoint::start(&controller).await;
    let waypoint = Waypoint::start(&controller, &endpoint).await;

    // HTTP/1.1 is detected and goes through the engine (which adds a request id).
    let stream = tunnel(&controller, waypoint.addr, vip(SNIFFED_PORT), client_addr())
        .await
        .unwrap();
    let (status, text) = get_http1(stream, "/sniffed").await;
    assert_eq!(
        (status, text.as_str()),
        (200, "orders-v1 GET /sniffed HTTP/1.1")
    );
    // So is HTTP/2 with prior knowledge.
    let stream = tunnel(&controller, waypoint.addr, vip(SNIFFED_PORT), client_addr())
        .await
        .unwrap();
    let (status, _) = get_http2(stream, "/sniffed2").await;
    assert_eq!(status, 200);
    let requests = endpoint.requests();
    assert!(
        requests.contains(&"GET /sniffed HTTP/1.1 x-request-id".to_owned())
            && requests.contains(&"GET /sniffed2 HTTP/2.0 x-request-id".to_owned()),
        "{requests:?}"
    );

    // Anything else is spliced to an endpoint as it is.
    let mut stream = tunnel(&controller, waypoint.addr, vip(SNIFFED_PORT), client_addr())
        .await
        .unwrap();
    stream.write_all(b"\x00\x01binary").await.unwrap();
    let mut echoed = [0u8; 8];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"\x00\x01binary");
    let opaque = endpoint.tunnels().pop().unwrap();
    assert_eq!(opaque.authority, "127.0.0.1:7070".parse().unwrap());
}
