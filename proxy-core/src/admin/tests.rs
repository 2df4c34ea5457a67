//! The three endpoints over real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use hbone::{Authority, Identity};
use test_support::raw_http::{exchange, request};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::*;
use crate::identity::{CertSettings, CertificateSigner, IdentityError};
use crate::telemetry::{ConnectionLabels, Reporter};

/// Signs in process, each request waiting for a permit so tests decide when certificates
/// arrive.
struct GatedCa {
    authority: Authority,
    gate: Arc<Semaphore>,
}

#[tonic::async_trait]
impl CertificateSigner for GatedCa {
    async fn sign(
        &self,
        identity: &Identity,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError> {
        let permit = self.gate.acquire().await;
        permit
            .map_err(|_| IdentityError::Ca("closed".into()))?
            .forget();
        self.authority
            .sign_csr(csr_pem, identity, ttl)
            .map_err(|e| IdentityError::Ca(e.to_string()))
    }
}

struct Running {
    admin: SocketAddr,
    metrics: SocketAddr,
    ready: SocketAddr,
    context: AdminContext,
    gate: Arc<Semaphore>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start() -> Running {
    let gate = Arc::new(Semaphore::new(0));
    let signer = GatedCa {
        authority: Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap(),
        gate: gate.clone(),
    };
    let context = AdminContext {
        state: ProxyState::new(),
        certs: CertManager::with_signer(Arc::new(signer), CertSettings::default()),
        metrics: Metrics::new(),
        readiness: Readiness::new(),
        extra_dump: Arc::new(|| serde_json::json!({"pods": ["shop/orders-1"]})),
    };
    let listeners = AdminListeners::bind(AdminAddresses {
        admin: "127.0.0.1:0".parse().unwrap(),
        metrics: "127.0.0.1:0".parse().unwrap(),
        ready: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap();
    let (admin, metrics, ready) = (
        listeners.admin.local_addr().unwrap(),
        listeners.metrics.local_addr().unwrap(),
        listeners.ready.local_addr().unwrap(),
    );
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve_listeners(listeners, context.clone(), shutdown));
    Running {
        admin,
        metrics,
        ready,
        context,
        gate,
        stop,
        task,
    }
}

#[tokio::test]
async fn ready_waits_for_config_certificates_and_conditions() {
    let r = start().await;
    let orders: Identity = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
    let condition = r.context.readiness.block("pod shop/orders-1");
    r.context.certs.prefetch(&orders);

    let reply = request(r.ready, "GET", "/healthz/ready").await;
    assert_eq!(reply.status, 503);
    for part in ["config", "certificates", "pod shop/orders-1"] {
        assert!(reply.body.contains(part), "{part}: {}", reply.body);
    }

    r.context.state.mark_synced();
    drop(condition);
    let reply = request(r.ready, "GET", "/healthz/ready").await;
    assert_eq!(reply.status, 503, "the certificate is still missing");
    assert!(!reply.body.contains("config"), "{}", reply.body);
    assert!(reply.body.contains("certificates"), "{}", reply.body);

    r.gate.add_permits(1);
    r.context.certs.fetch(&orders).await.unwrap();
    let reply = request(r.ready, "GET", "/healthz/ready").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "ready\n");
    // A successor sharing the port during a restart is told apart by this.
    let pid = std::process::id().to_string();
    assert_eq!(reply.header(PROCESS_HEADER), Some(pid.as_str()));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let r = start().await;
    r.context.metrics.connection_opened(&ConnectionLabels {
        reporter: Some(Reporter::Destination),
        ..Default::default()
    });
    let reply = request(r.metrics, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{}",
        reply.head
    );
    assert!(
        reply
            .body
            .contains("# TYPE istio_tcp_connections_opened_total counter")
    );
    let opened = reply
        .body
        .lines()
        .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .unwrap();
    assert!(opened.contains("reporter=\"destination\""), "{opened}");
    assert!(opened.ends_with(" 1"), "{opened}");
}

#[tokio::test]
async fn config_dump_has_config_certificates_and_extra_but_no_keys() {
    let r = start().await;
    let orders: Identity = "spiffe://cluster.local/ns/shop/sa/orders".parse().unwrap();
    r.gate.add_permits(1);
    r.context.certs.prefetch(&orders);
    r.context.certs.fetch(&orders).await.unwrap();

    let reply = request(r.admin, "GET", "/config_dump").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(!reply.body.contains("PRIVATE KEY"));
    let dump: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert!(dump["config"].is_object(), "{dump}");
    assert_eq!(dump["certificates"][0]["identity"], orders.to_string());
    assert_eq!(dump["certificates"][0]["state"], "available");
    assert_eq!(dump["extra"]["pods"][0], "shop/orders-1");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let r = start().await;
    assert_eq!(request(r.admin, "GET", "/nope").await.status, 404);
    // Each path lives on its own port only.
    assert_eq!(request(r.admin, "GET", "/metrics").await.status, 404);
    assert_eq!(request(r.metrics, "GET", "/config_dump").await.status, 404);
    assert_eq!(request(r.ready, "GET", "/metrics").await.status, 404);
    let reply = request(r.admin, "POST", "/config_dump").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    let reply = request(r.metrics, "HEAD", "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let r = start().await;
    let big = "x".repeat(32 * 1024);
    let reply = exchange(
        r.metrics,
        &format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_ne!(reply.status, 200, "{}", reply.head);
}

#[tokio::test]
async fn shutdown_stops_every_endpoint() {
    let r = start().await;
    assert_eq!(request(r.ready, "GET", "/healthz/ready").await.status, 503);
    // A connection left open must not keep the endpoints alive.
    let idle = TcpStream::connect(r.admin).await.unwrap();
    r.stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(60), r.task)
        .await
        .expect("the endpoints stop")
        .unwrap()
        .unwrap();
    drop(idle);
    for addr in [r.admin, r.metrics, r.ready] {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
}

#[tokio::test]
async fn extra_metrics_follow_the_tcp_metrics() {
    let listeners = AdminListeners::bind(AdminAddresses {
        admin: "127.0.0.1:0".parse().unwrap(),
        metrics: "127.0.0.1:0".parse().unwrap(),
        ready: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap();
    let metrics = listeners.metrics.local_addr().unwrap();
    let signer = GatedCa {
        authority: Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap(),
        gate: Arc::new(Semaphore::new(0)),
    };
    let context = AdminContext {
        state: ProxyState::new(),
        certs: CertManager::with_signer(Arc::new(signer), CertSettings::default()),
        metrics: Metrics::new(),
        readiness: Readiness::new(),
        extra_dump: Arc::new(|| serde_json::Value::Null),
    };
    let extensions = AdminExtensions {
        tap: None,
        extra_metrics: Some(Arc::new(|| {
            "# TYPE istio_requests_total counter\nistio_requests_total 7\n".to_owned()
        })),
    };
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve_listeners_with(
        listeners, context, extensions, shutdown,
    ));
    let reply = request(metrics, "GET", "/metrics").await;
    assert_eq!(reply.status, 200);
    let tcp = reply
        .body
        .find("istio_tcp_connections_opened_total")
        .unwrap();
    let extra = reply.body.find("istio_requests_total 7").unwrap();
    assert!(tcp < extra, "{}", reply.body);
    stop.send_replace(true);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn tap_streams_the_events_its_query_selects_until_the_client_leaves() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::tap::{Tap, TapEvent};

    let listeners = AdminListeners::bind(AdminAddresses {
        admin: "127.0.0.1:0".parse().unwrap(),
        metrics: "127.0.0.1:0".parse().unwrap(),
        ready: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap();
    let admin = listeners.admin.local_addr().unwrap();
    let context = start().await.context;
    let tap = Arc::new(Tap::default());
    let extensions = AdminExtensions {
        tap: Some(tap.clone()),
        extra_metrics: None,
    };
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(serve_listeners_with(
        listeners, context, extensions, shutdown,
    ));

    let mut client = TcpStream::connect(admin).await.unwrap();
    client
        .write_all(b"GET /tap?workload=orders HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The listener exists once the response head is out.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let mut buf = [0u8; 512];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&seen).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(tap.is_active());
    for workload in ["payments", "orders"] {
        tap.publish(|| TapEvent {
            kind: "request",
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            destination_workload: workload.into(),
            ..TapEvent::default()
        });
    }
    while !String::from_utf8_lossy(&seen).contains("\"orders\"") {
        let mut buf = [0u8; 512];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("payments"));
    drop(client);
    // The listener leaves with its client, at the next event at the latest.
    for _ in 0..100 {
        tap.publish(TapEvent::default);
        if !tap.is_active() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!tap.is_active());
}

#[tokio::test]
async fn tap_is_not_found_where_the_proxy_has_none() {
    let r = start().await;
    let reply = request(r.admin, "GET", "/tap").await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("no tap"), "{}", reply.body);
}
