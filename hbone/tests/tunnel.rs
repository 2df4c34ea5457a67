//! HBONE over real loopback sockets and real TLS.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use hbone::{ConnectRequest, Error, Pool, Upstream, WorkloadCertificate};
use http::StatusCode;
use support::{Certs, TestServer, echo_with_trailer, identity, pattern, pattern_sink, upstream_to};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn bytes_flow_both_ways_and_half_close_propagates() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let pool = Pool::default();

    let mut request = ConnectRequest::new(app);
    request.forwarded_for = Some("10.1.2.3:4567".parse().unwrap());
    request.baggage = Some("k8s.namespace.name=shop".into());
    let mut tunnel = pool
        .connect(
            &certs.client,
            &upstream_to(server.addr, &certs.server),
            &request,
        )
        .await
        .expect("tunnel");
    tunnel.write_all(b"hello, ").await.unwrap();
    tunnel.write_all(b"mesh").await.unwrap();
    // Our half-close must reach the app as EOF, and its reply must still reach us after it.
    tunnel.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tunnel.read_to_end(&mut reply).await.unwrap();
    assert_eq!(String::from_utf8(reply).unwrap(), "hello, mesh<done 11>");

    let headers = server.seen.headers.lock().unwrap()[0].clone();
    assert_eq!(headers["forwarded"], "for=\"10.1.2.3:4567\"");
    assert_eq!(headers["baggage"], "k8s.namespace.name=shop");
    assert_eq!(
        server.seen.identities.lock().unwrap()[0],
        identity("shop", "frontend"),
        "the server sees the client's verified identity"
    );
}

#[tokio::test]
async fn server_side_half_close_lets_the_client_keep_sending() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    // An app that greets, closes its write side, then collects what the client still sends.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(b"bye").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        let _ = got_tx.send(rest);
    });

    let pool = Pool::default();
    let mut tunnel = pool
        .connect(
            &certs.client,
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(app),
        )
        .await
        .unwrap();
    let mut greeting = Vec::new();
    tunnel.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(greeting, b"bye", "the app's half-close arrives as EOF");
    tunnel.write_all(b"late data").await.unwrap();
    tunnel.shutdown().await.unwrap();
    assert_eq!(got_rx.await.unwrap(), b"late data");
}

/// Streams `len` pattern bytes through a tunnel and returns the sink's verdict.
async fn transfer(len: usize) -> String {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let sink = pattern_sink().await;
    let pool = Pool::default();
    let mut tunnel = pool
        .connect(
            &certs.client,
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(sink),
        )
        .await
        .unwrap();
    let pattern = pattern();
    let mut sent = 0usize;
    while sent < len {
        let offset = sent % support::PATTERN_PERIOD;
        let n = (len - sent).min(support::PATTERN_CHUNK);
        tunnel
            .write_all(&pattern[offset..offset + n])
            .await
            .unwrap();
        sent += n;
    }
    tunnel.shutdown().await.unwrap();
    let mut verdict = String::new();
    tunnel.read_to_string(&mut verdict).await.unwrap();
    verdict
}

#[tokio::test]
async fn one_mebibyte_arrives_intact() {
    assert_eq!(transfer(1 << 20).await, format!("ok {}", 1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_arrives_intact() {
    assert_eq!(transfer(1 << 30).await, format!("ok {}", 1 << 30));
}

#[tokio::test]
async fn refuses_a_server_whose_identity_is_not_expected() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let upstream = Upstream {
        address: server.addr,
        identities: vec![identity("shop", "payments")],
        source_ip: None,
    };
    let err = Pool::default()
        .connect(&certs.client, &upstream, &ConnectRequest::new(app))
        .await
        .expect_err("wrong server identity must be refused");
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("not one of the expected"), "{err}");
    assert_eq!(server.seen.connects.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn refuses_a_client_certificate_from_another_ca() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    // The stranger trusts our CA (so it would accept the server) but its own leaf is foreign.
    let other =
        hbone::Authority::generate_root(support::TRUST_DOMAIN, Duration::from_secs(3600)).unwrap();
    let foreign = other
        .issue(&identity("shop", "frontend"), Duration::from_secs(3600))
        .unwrap();
    let stranger = WorkloadCertificate::from_der(
        foreign.private_key(),
        foreign.chain().to_vec(),
        certs.ca.roots().to_vec(),
    )
    .unwrap();
    let result = Pool::default()
        .connect(
            &Arc::new(stranger),
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(app),
        )
        .await;
    assert!(
        result.is_err(),
        "a foreign client certificate must be refused"
    );
    assert_eq!(
        server.seen.connects.load(Ordering::SeqCst),
        0,
        "no tunnel reached the handler"
    );
}

#[tokio::test]
async fn refuses_an_expired_server_certificate() {
    let certs = Certs::new();
    let now = SystemTime::now();
    let expired = certs
        .ca
        .issue_valid_between(
            &identity("shop", "orders"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let server = TestServer::start(&expired, None).await;
    let app = echo_with_trailer().await;
    let err = Pool::default()
        .connect(
            &certs.client,
            &upstream_to(server.addr, &expired),
            &ConnectRequest::new(app),
        )
        .await
        .expect_err("expired certificate must be refused");
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn refuses_an_expired_client_certificate() {
    let certs = Certs::new();
    let now = SystemTime::now();
    let expired = certs
        .ca
        .issue_valid_between(
            &identity("shop", "frontend"),
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )
        .unwrap();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let result = Pool::default()
        .connect(
            &Arc::new(expired),
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(app),
        )
        .await;
    assert!(result.is_err());
    assert_eq!(server.seen.connects.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_streams_share_ten_connections() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let app = echo_with_trailer().await;
    let pool = Pool::default();
    let upstream = upstream_to(server.addr, &certs.server);
    let all_open = Arc::new(tokio::sync::Barrier::new(1000));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let (pool, upstream, cert, all_open) = (
            pool.clone(),
            upstream.clone(),
            certs.client.clone(),
            all_open.clone(),
        );
        tasks.spawn(async move {
            let mut tunnel = pool
                .connect(&cert, &upstream, &ConnectRequest::new(app))
                .await?;
            // Every stream stays open until all thousand are: they really are concurrent.
            all_open.wait().await;
            let message = format!("stream {i}");
            tunnel.write_all(message.as_bytes()).await.map_err(io)?;
            tunnel.shutdown().await.map_err(io)?;
            let mut reply = String::new();
            tunnel.read_to_string(&mut reply).await.map_err(io)?;
            assert_eq!(reply, format!("{message}<done {}>", message.len()));
            Ok::<_, Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    let peers: HashSet<_> = server.seen.peers.lock().unwrap().iter().copied().collect();
    assert_eq!(server.seen.connects.load(Ordering::SeqCst), 1000);
    assert!(
        peers.len() <= 10,
        "{} TCP connections for 1000 streams",
        peers.len()
    );
    assert!(pool.connection_count() <= 10);
}

fn io(e: std::io::Error) -> Error {
    Error::Unavailable("0.0.0.0:0".parse().unwrap(), e.to_string())
}

#[tokio::test]
async fn a_handler_denial_reaches_the_client_as_401() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, Some(StatusCode::UNAUTHORIZED)).await;
    let app = echo_with_trailer().await;
    let err = Pool::default()
        .connect(
            &certs.client,
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(app),
        )
        .await
        .expect_err("denied");
    assert!(err.is_denied(), "{err}");
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn an_unreachable_destination_is_503() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Pool::default()
        .connect(
            &certs.client,
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(closed),
        )
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{err}");
}

/// A raw HTTP/2 client over the HBONE TLS config, to send what the pool never would.
async fn raw_request(server: &TestServer, certs: &Certs, request: http::Request<()>) -> StatusCode {
    let config =
        hbone::tls::client_config(&certs.client, &[certs.server.identity().clone()]).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(server.addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    response.await.unwrap().status()
}

#[tokio::test]
async fn a_request_that_is_not_connect_gets_400() {
    let certs = Certs::new();
    let server = TestServer::start(&certs.server, None).await;
    let get = http::Request::get("https://10.0.0.1:8080/")
        .body(())
        .unwrap();
    assert_eq!(
        raw_request(&server, &certs, get).await,
        StatusCode::BAD_REQUEST
    );
    let mut by_name = http::Request::new(());
    *by_name.method_mut() = http::Method::CONNECT;
    *by_name.uri_mut() = "orders.shop:8080".parse().unwrap();
    assert_eq!(
        raw_request(&server, &certs, by_name).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(server.seen.connects.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_drain_new_streams_reconnect_and_old_ones_finish() {
    let certs = Certs::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = TestServer::start_on(listener, &certs.server, None, Duration::from_secs(10));
    let app = echo_with_trailer().await;
    let pool = Pool::default();
    let upstream = upstream_to(first.addr, &certs.server);
    let first_seen = first.seen.clone();

    let mut in_flight = pool
        .connect(&certs.client, &upstream, &ConnectRequest::new(app))
        .await
        .unwrap();
    in_flight.write_all(b"before ").await.unwrap();

    // The old server drains (GOAWAY); its replacement takes over the same address.
    let drained = first.drain();
    let second_listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let second = TestServer::start_on(
        second_listener,
        &certs.server,
        None,
        Duration::from_secs(10),
    );
    // Give the GOAWAY time to reach the client, so the pool must notice it.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut fresh = pool
        .connect(&certs.client, &upstream, &ConnectRequest::new(app))
        .await
        .expect("new stream");
    fresh.write_all(b"new").await.unwrap();
    fresh.shutdown().await.unwrap();
    let mut reply = String::new();
    fresh.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "new<done 3>");
    assert_eq!(
        second.seen.connects.load(Ordering::SeqCst),
        1,
        "the new stream reached the new server"
    );

    // The stream in flight during the drain still completes.
    in_flight.write_all(b"after").await.unwrap();
    in_flight.shutdown().await.unwrap();
    let mut reply = String::new();
    in_flight.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "before after<done 12>");
    let report = drained.await.unwrap();
    assert_eq!(report.aborted, 0);
    assert_eq!(first_seen.connects.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_drain_deadline_cuts_streams_that_do_not_finish() {
    let certs = Certs::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = TestServer::start_on(listener, &certs.server, None, Duration::from_millis(200));
    let app = echo_with_trailer().await;
    let pool = Pool::default();
    let mut stuck = pool
        .connect(
            &certs.client,
            &upstream_to(server.addr, &certs.server),
            &ConnectRequest::new(app),
        )
        .await
        .unwrap();
    stuck.write_all(b"x").await.unwrap();
    let report = server.drain().await.unwrap();
    assert_eq!(report.aborted, 1);
    let mut rest = Vec::new();
    // The cut stream ends (with an error or EOF), never with the trailer of a clean close.
    let _ = stuck.read_to_end(&mut rest).await;
    assert!(!String::from_utf8_lossy(&rest).contains("<done"));
}
