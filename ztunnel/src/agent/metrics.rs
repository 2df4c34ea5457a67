//! The node agent's own `/metrics` (Prometheus text format), served when `--metrics-addr` is
//! set: how the node's probe SNAT rule fares. Small on purpose: two numbers, one short-lived
//! HTTP/1.1 connection at a time each bounded by a deadline.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 8;
/// Lifetime of one connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent counts.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Writes or removals of the node's probe SNAT rule that failed.
    pub probe_rule_failures: AtomicU64,
    /// Pod addresses the rule SNATs probes to, as last written.
    pub probe_rule_addresses: AtomicU64,
    /// CNI plugin requests refused because too many were in progress.
    pub cni_requests_refused: AtomicU64,
}

impl AgentMetrics {
    /// The Prometheus text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "ztunnel_node_agent_probe_rule_failures_total",
                "counter",
                "Failed writes or removals of the node's rule SNATing health probes of \
                 captured pods to 169.254.7.127.",
                self.probe_rule_failures.load(Ordering::Relaxed),
            ),
            (
                "ztunnel_node_agent_probe_rule_addresses",
                "gauge",
                "Captured pod addresses the node's probe SNAT rule covers.",
                self.probe_rule_addresses.load(Ordering::Relaxed),
            ),
            (
                "ztunnel_node_agent_cni_requests_refused_total",
                "counter",
                "CNI plugin requests refused because too many were in progress (the runtime \
                 retries the pod's sandbox).",
                self.cni_requests_refused.load(Ordering::Relaxed),
            ),
        ] {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out
    }
}

fn respond(metrics: &AgentMetrics, path: &str) -> Response<Full<Bytes>> {
    let (status, body) = if path == "/metrics" {
        (StatusCode::OK, metrics.render())
    } else {
        (StatusCode::NOT_FOUND, "not found\n".to_string())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the agent's metrics on {addr}: {e}"),
        )
    })
}

/// Serves `/metrics` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<AgentMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("agent metrics accept: {e}");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let response = respond(&metrics, request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_metrics_in_prometheus_text() {
        let m = AgentMetrics::default();
        m.probe_rule_failures.fetch_add(2, Ordering::Relaxed);
        m.probe_rule_addresses.store(3, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("# TYPE ztunnel_node_agent_probe_rule_failures_total counter\n"));
        assert!(text.contains("\nztunnel_node_agent_probe_rule_failures_total 2\n"));
        assert!(text.contains("\nztunnel_node_agent_probe_rule_addresses 3\n"));
        assert_eq!(respond(&m, "/other").status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(AgentMetrics::default());
        metrics.probe_rule_addresses.store(1, Ordering::Relaxed);
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve(listener, metrics, shutdown));
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("ztunnel_node_agent_probe_rule_addresses 1\n"),
            "{body}"
        );
        stop.send(true).unwrap();
        server.await.unwrap();
    }
}
