//! TCP telemetry with Istio's metric names and labels, and the per-connection access log.
//!
//! The registry is owned by each [`Metrics`] value rather than being a process-wide recorder:
//! tests and the sandbox run several proxies in one process, and each must report only its own
//! connections.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod access_switch;
mod limits;

pub use access_switch::AccessLogSwitch;

use hbone::LimitCounters;
use prometheus_registry::{Registry, text};

/// Which side reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's ztunnel.
    Source,
    /// The server's ztunnel.
    Destination,
    /// A waypoint, between the two (Istio's waypoints report as "waypoint").
    Waypoint,
}

impl Reporter {
    /// The `reporter` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }
}

/// Istio's standard labels of `istio_tcp_*` metrics.
///
/// Empty values are rendered as `"unknown"`, as Istio does; `request_protocol` is always
/// `"tcp"`. `source_canonical_service` and `source_canonical_revision` (and their destination
/// counterparts) repeat the app and version labels: Istio fills both from the workload's
/// canonical name and revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionLabels {
    /// `reporter`: "source", "destination" or "waypoint".
    pub reporter: Option<Reporter>,
    /// `source_workload`.
    pub source_workload: String,
    /// `source_workload_namespace`.
    pub source_workload_namespace: String,
    /// `source_principal`.
    pub source_principal: String,
    /// `source_app` (also `source_canonical_service`).
    pub source_app: String,
    /// `source_version` (also `source_canonical_revision`).
    pub source_version: String,
    /// `source_cluster`.
    pub source_cluster: String,
    /// `destination_workload`.
    pub destination_workload: String,
    /// `destination_workload_namespace`.
    pub destination_workload_namespace: String,
    /// `destination_principal`.
    pub destination_principal: String,
    /// `destination_app` (also `destination_canonical_service`).
    pub destination_app: String,
    /// `destination_version` (also `destination_canonical_revision`).
    pub destination_version: String,
    /// `destination_cluster`.
    pub destination_cluster: String,
    /// `destination_service` (hostname).
    pub destination_service: String,
    /// `destination_service_name`.
    pub destination_service_name: String,
    /// `destination_service_namespace`.
    pub destination_service_namespace: String,
    /// `connection_security_policy`: "mutual_tls", or "unknown" when left empty.
    pub connection_security_policy: String,
    /// `response_flags`: "-" when left empty, "DENY" (refused by authorization policy) or
    /// "CONNECT" (the upstream connection failed), as Istio's ztunnel reports them.
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

const OPENED: &str = "istio_tcp_connections_opened_total";
const CLOSED: &str = "istio_tcp_connections_closed_total";
const SENT: &str = "istio_tcp_sent_bytes_total";
const RECEIVED: &str = "istio_tcp_received_bytes_total";
const BUILD: &str = "istio_build";
/// Suffix of `<component>_metrics_series_overflow_total`.
const OVERFLOW: &str = "metrics_series_overflow_total";

/// The counters of one label set.
#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    closed: AtomicU64,
    /// Server → client bytes (Istio: "sent during response").
    sent: AtomicU64,
    /// Client → server bytes (Istio: "received during request").
    received: AtomicU64,
}

/// The proxy's metric registry.
pub struct Metrics {
    series: Registry<ConnectionLabels, Counters>,
    /// Prefix of the proxy's own (non-Istio) metric names.
    component: &'static str,
    limits: limits::Listeners,
    /// Whose connections get access log lines.
    access: Arc<AccessLogSwitch>,
}

/// The listener kind of HBONE servers in [`Metrics::connection_limits`].
pub const HBONE_LISTENER: &str = "hbone";

impl Metrics {
    /// An empty registry of a ztunnel.
    pub fn new() -> Arc<Self> {
        Self::for_component("ztunnel")
    }

    /// An empty registry whose own metrics are named `<component>_...` (`"waypoint"`).
    pub fn for_component(component: &'static str) -> Arc<Self> {
        let metrics = Self {
            series: Registry::default(),
            component,
            limits: limits::Listeners::default(),
            access: Arc::default(),
        };
        // Both proxies serve HBONE: its series exist (at zero) from the start.
        metrics.limits.get(HBONE_LISTENER);
        Arc::new(metrics)
    }

    /// The access log switches this registry's lines follow (ztunnel subscribes them to the
    /// controller's; a proxy that does not writes every line).
    pub fn access_switch(&self) -> Arc<AccessLogSwitch> {
        self.access.clone()
    }

    /// The prefix of the proxy's own metric names (`ztunnel`, `waypoint`).
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The counters of connections closed or refused by the limits of `listener`'s servers
    /// (`"hbone"`, the waypoint's `"http"`), shared by all of them.
    pub fn connection_limits(&self, listener: &'static str) -> Arc<LimitCounters> {
        self.limits.get(listener)
    }

    /// Counts `istio_tcp_connections_opened_total`.
    pub fn connection_opened(&self, labels: &ConnectionLabels) {
        self.series.with(labels, render_labels, |counters| {
            counters.opened.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Counts `istio_tcp_connections_closed_total` and the byte totals, and writes the access
    /// log line ("connection complete") unless the access log switches turn it off for the
    /// namespace of the workload this side serves.
    ///
    /// As in Istio, `istio_tcp_received_bytes_total` counts what the client sent (the
    /// "request") and `istio_tcp_sent_bytes_total` what the server sent back, whichever side
    /// reports.
    pub fn connection_closed(&self, record: &ConnectionRecord) {
        self.series.with(&record.labels, render_labels, |counters| {
            counters.closed.fetch_add(1, Ordering::Relaxed);
            counters
                .received
                .fetch_add(record.bytes_sent, Ordering::Relaxed);
            counters
                .sent
                .fetch_add(record.bytes_received, Ordering::Relaxed);
        });
        // The line belongs to the workload this side serves: the client's on the source
        // side, the server's otherwise, as a Telemetry selects the proxies of its workloads.
        let l = &record.labels;
        let (namespace, workload) = match l.reporter {
            Some(Reporter::Source) => (&l.source_workload_namespace, &l.source_workload),
            _ => (&l.destination_workload_namespace, &l.destination_workload),
        };
        if self.access.logs(namespace, workload) {
            access_log(record);
        }
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let series = self.series.sorted();
        let mut out = String::with_capacity(512 + series.len() * 4 * 700);
        type Pick = fn(&Counters) -> &AtomicU64;
        let families: [(&str, &str, Pick); 4] = [
            (OPENED, "TCP connections opened through this proxy.", |c| {
                &c.opened
            }),
            (
                CLOSED,
                "TCP connections through this proxy that have ended.",
                |c| &c.closed,
            ),
            (
                SENT,
                "Bytes the server sent back on TCP connections (the response direction).",
                |c| &c.sent,
            ),
            (
                RECEIVED,
                "Bytes the client sent on TCP connections (the request direction).",
                |c| &c.received,
            ),
        ];
        for (name, help, pick) in families {
            text::family(&mut out, name, help, "counter");
            prometheus_registry::samples(&mut out, name, &series, |c| {
                pick(c).load(Ordering::Relaxed)
            });
        }
        text::family(&mut out, BUILD, "Build of this proxy.", "gauge");
        let _ = writeln!(
            out,
            "{BUILD}{} 1",
            text::render_labels(&[
                ("component", self.component, ""),
                ("tag", env!("CARGO_PKG_VERSION"), ""),
            ])
        );
        self.series.render_overflow(
            &mut out,
            &format!("{}_{OVERFLOW}", self.component),
            "Connections not counted: the number of label sets is at its bound.",
        );
        self.limits.render(&mut out, self.component);
        out
    }
}

/// Writes the "connection complete" line. Byte counts are from the reporting side's workload:
/// on the source side "sent" is what the client sent, on the destination side what the server
/// sent, as Istio's ztunnel logs them. A waypoint receives the client's tunnel, so it logs as
/// the receiving side.
fn access_log(record: &ConnectionRecord) {
    let labels = &record.labels;
    let (sent, received, direction) = match labels.reporter {
        Some(Reporter::Destination | Reporter::Waypoint) => {
            (record.bytes_received, record.bytes_sent, "inbound")
        }
        _ => (record.bytes_sent, record.bytes_received, "outbound"),
    };
    // Identities are only known for certain when the connection was mutual TLS.
    let mtls = labels.connection_security_policy == "mutual_tls";
    let identity = |principal: &str| (mtls && !principal.is_empty()).then(|| principal.to_owned());
    let src_workload = first_non_empty(&labels.source_workload, &labels.source_app);
    let dst_workload = first_non_empty(&labels.destination_workload, &labels.destination_app);
    tracing::event!(
        target: "access",
        tracing::Level::INFO,
        src.addr = %record.source,
        src.workload = src_workload,
        src.namespace = non_empty(&labels.source_workload_namespace),
        src.identity = identity(&labels.source_principal),
        dst.addr = %record.destination,
        dst.service = non_empty(&labels.destination_service),
        dst.workload = dst_workload,
        dst.namespace = non_empty(&labels.destination_workload_namespace),
        dst.identity = identity(&labels.destination_principal),
        direction,
        bytes_sent = sent,
        bytes_recv = received,
        duration = %format_args!("{}ms", record.duration.as_millis()),
        error = record.error.as_deref(),
        "connection complete"
    );
}

fn non_empty(value: &str) -> Option<&str> {
    (!value.is_empty()).then_some(value)
}

fn first_non_empty<'a>(first: &'a str, second: &'a str) -> Option<&'a str> {
    non_empty(first).or_else(|| non_empty(second))
}

/// Renders a label set in Istio's label order.
fn render_labels(labels: &ConnectionLabels) -> String {
    let reporter = labels.reporter.map(Reporter::as_str).unwrap_or("");
    let pairs: [(&str, &str, &str); 23] = [
        ("reporter", reporter, "unknown"),
        ("source_workload", &labels.source_workload, "unknown"),
        ("source_canonical_service", &labels.source_app, "unknown"),
        (
            "source_canonical_revision",
            &labels.source_version,
            "unknown",
        ),
        (
            "source_workload_namespace",
            &labels.source_workload_namespace,
            "unknown",
        ),
        ("source_principal", &labels.source_principal, "unknown"),
        ("source_app", &labels.source_app, "unknown"),
        ("source_version", &labels.source_version, "unknown"),
        ("source_cluster", &labels.source_cluster, "unknown"),
        (
            "destination_service",
            &labels.destination_service,
            "unknown",
        ),
        (
            "destination_service_namespace",
            &labels.destination_service_namespace,
            "unknown",
        ),
        (
            "destination_service_name",
            &labels.destination_service_name,
            "unknown",
        ),
        (
            "destination_workload",
            &labels.destination_workload,
            "unknown",
        ),
        (
            "destination_canonical_service",
            &labels.destination_app,
            "unknown",
        ),
        (
            "destination_canonical_revision",
            &labels.destination_version,
            "unknown",
        ),
        (
            "destination_workload_namespace",
            &labels.destination_workload_namespace,
            "unknown",
        ),
        (
            "destination_principal",
            &labels.destination_principal,
            "unknown",
        ),
        ("destination_app", &labels.destination_app, "unknown"),
        (
            "destination_version",
            &labels.destination_version,
            "unknown",
        ),
        (
            "destination_cluster",
            &labels.destination_cluster,
            "unknown",
        ),
        ("request_protocol", "tcp", "tcp"),
        ("response_flags", &labels.response_flags, "-"),
        (
            "connection_security_policy",
            &labels.connection_security_policy,
            "unknown",
        ),
    ];
    text::render_labels(&pairs)
}

#[cfg(test)]
mod tests;
