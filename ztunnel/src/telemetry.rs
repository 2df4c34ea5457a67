//! TCP telemetry with Istio's metric names and labels, and the per-connection access log.

use std::sync::Arc;
use std::time::Duration;

/// Which side reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's ztunnel.
    Source,
    /// The server's ztunnel.
    Destination,
}

/// Istio's standard labels of `istio_tcp_*` metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionLabels {
    /// `reporter`: "source" or "destination".
    pub reporter: Option<Reporter>,
    /// `source_workload`.
    pub source_workload: String,
    /// `source_workload_namespace`.
    pub source_workload_namespace: String,
    /// `source_principal`.
    pub source_principal: String,
    /// `source_app`.
    pub source_app: String,
    /// `source_version`.
    pub source_version: String,
    /// `destination_workload`.
    pub destination_workload: String,
    /// `destination_workload_namespace`.
    pub destination_workload_namespace: String,
    /// `destination_principal`.
    pub destination_principal: String,
    /// `destination_app`.
    pub destination_app: String,
    /// `destination_version`.
    pub destination_version: String,
    /// `destination_service` (hostname).
    pub destination_service: String,
    /// `destination_service_name`.
    pub destination_service_name: String,
    /// `destination_service_namespace`.
    pub destination_service_namespace: String,
    /// `connection_security_policy`: "mutual_tls" or "none".
    pub connection_security_policy: String,
    /// `response_flags`: "-" or Envoy-style flags (e.g. "UF" upstream failure, "DENY"?).
    pub response_flags: String,
}

/// One finished connection, for the access log.
#[derive(Clone, Debug)]
pub struct ConnectionRecord {
    /// Labels.
    pub labels: ConnectionLabels,
    /// Client address.
    pub source: std::net::SocketAddr,
    /// Original destination.
    pub destination: std::net::SocketAddr,
    /// Bytes from client to server.
    pub bytes_sent: u64,
    /// Bytes from server to client.
    pub bytes_received: u64,
    /// How long it lasted.
    pub duration: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The proxy's metric registry.
pub struct Metrics {
    _private: (),
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        todo!()
    }

    /// Counts `istio_tcp_connections_opened_total`.
    pub fn connection_opened(&self, labels: &ConnectionLabels) {
        let _ = labels;
        todo!()
    }

    /// Counts `istio_tcp_connections_closed_total` and the byte totals, and writes the access
    /// log line ("connection complete").
    pub fn connection_closed(&self, record: &ConnectionRecord) {
        let _ = record;
        todo!()
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        todo!()
    }
}
