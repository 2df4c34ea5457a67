//! Span export: finished spans go into a bounded queue (a full queue drops the span and
//! counts it, never blocking a request); one task takes them in batches and sends each batch
//! to its provider's collector as an OTLP/gRPC `TraceService/Export` call over the mesh (an
//! endpoint of the collector's service, through the waypoint's own upstream connections:
//! HBONE to ambient pods, plain TCP otherwise). One export is in flight at a time, under a
//! deadline: a slow collector fills the queue, and the rest is counted as dropped.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api::otlp::collector::ExportTraceServiceRequest;
use api::otlp::common::InstrumentationScope;
use api::otlp::resource::Resource;
use api::otlp::trace::{ResourceSpans, ScopeSpans, Span};
use api::prost::Message;
use http_body_util::BodyExt;
use prometheus_registry::text;
use tokio::sync::mpsc;

use super::super::body;
use super::super::origin::Caller;
use super::super::upstream::{UpstreamClient, UpstreamError};
use super::span::attribute;
use super::spec::Provider;

/// Spans waiting for export; beyond this they are dropped (OpenTelemetry's default queue).
const QUEUE: usize = 2048;
/// Spans per export call (OpenTelemetry's default batch).
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const FLUSH: Duration = Duration::from_secs(1);
/// Deadline of one export call.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const SPANS: &str = "waypoint_trace_spans_total";

/// A finished span and where it goes.
struct Finished {
    provider: Arc<Provider>,
    resource: Arc<str>,
    span: Span,
}

/// Spans by result.
#[derive(Default)]
struct Counters {
    exported: AtomicU64,
    /// The queue was full.
    dropped: AtomicU64,
    /// The collector could not be reached, refused the batch or did not answer in time.
    failed: AtomicU64,
}

/// The span sink of a waypoint: a bounded queue and the task that exports it.
pub(crate) struct Tracer {
    queue: mpsc::Sender<Finished>,
    /// The queue's other end until the export task takes it.
    pending: Mutex<Option<mpsc::Receiver<Finished>>>,
    started: OnceLock<()>,
    counters: Arc<Counters>,
}

impl Default for Tracer {
    fn default() -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        Self {
            queue,
            pending: Mutex::new(Some(pending)),
            started: OnceLock::new(),
            counters: Arc::default(),
        }
    }
}

impl Tracer {
    /// Starts the export task (once) with the transport spans are sent through.
    pub(crate) fn start(&self, upstream: &Arc<dyn UpstreamClient>) {
        self.started.get_or_init(|| {
            let receiver = self.pending.lock().ok().and_then(|mut p| p.take());
            if let Some(receiver) = receiver {
                tokio::spawn(run(receiver, upstream.clone(), self.counters.clone()));
            }
        });
    }

    /// Queues `span` for `provider`, or counts it dropped when the queue is full.
    pub(crate) fn submit(&self, provider: &Arc<Provider>, resource: &Arc<str>, span: Span) {
        let finished = Finished {
            provider: provider.clone(),
            resource: resource.clone(),
            span,
        };
        if self.queue.try_send(finished).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text of the span counters.
    pub(crate) fn render(&self, out: &mut String) {
        text::family(
            out,
            SPANS,
            "Spans by result: exported, dropped (export queue full), failed (export failed).",
            "counter",
        );
        let c = &self.counters;
        for (result, n) in [
            ("exported", &c.exported),
            ("dropped", &c.dropped),
            ("failed", &c.failed),
        ] {
            let _ = writeln!(
                out,
                "{SPANS}{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

/// Takes batches off the queue and exports them, until every sender is gone.
async fn run(
    mut queue: mpsc::Receiver<Finished>,
    upstream: Arc<dyn UpstreamClient>,
    counters: Arc<Counters>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        for group in by_destination(batch) {
            let n = group.spans.len() as u64;
            let provider = group.provider.clone();
            let sent = tokio::time::timeout(EXPORT_TIMEOUT, export(&upstream, group)).await;
            let why = match sent {
                Ok(Ok(())) => {
                    counters.exported.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                Ok(Err(why)) => why,
                Err(_) => "timed out".to_owned(),
            };
            tracing::debug!(provider = %provider.name, why, "span export failed");
            counters.failed.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Spans of one batch that go to one collector with one resource.
struct Group {
    provider: Arc<Provider>,
    resource: Arc<str>,
    spans: Vec<Span>,
}

fn by_destination(batch: Vec<Finished>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for f in batch {
        let same = |g: &&mut Group| g.provider == f.provider && g.resource == f.resource;
        match groups.iter_mut().find(same) {
            Some(g) => g.spans.push(f.span),
            None => groups.push(Group {
                provider: f.provider,
                resource: f.resource,
                spans: vec![f.span],
            }),
        }
    }
    groups
}

/// One `Export` call of `group` to an endpoint of its collector.
async fn export(upstream: &Arc<dyn UpstreamClient>, group: Group) -> Result<(), String> {
    let p = group.provider.clone();
    let endpoints = upstream.endpoints(&p.namespace, &p.service, p.port);
    let endpoint = fastrand::choice(&endpoints)
        .ok_or_else(|| format!("no endpoint of {}:{}", p.service, p.port))?;
    let request = http::Request::post(format!("http://{}:{}{EXPORT_PATH}", p.service, p.port))
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(body::full(grpc_frame(&message(group))))
        .map_err(|e| e.to_string())?;
    // The waypoint itself calls: no caller identity to carry.
    let caller = Caller {
        identity: None,
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let response = upstream
        .send(endpoint, &caller, request)
        .await
        .map_err(|e: UpstreamError| e.to_string())?;
    let status = response.status();
    let head_status = grpc_status(response.headers());
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let grpc = head_status.or_else(|| collected.trailers().and_then(grpc_status));
    match (status.as_u16(), grpc.as_deref()) {
        (200, Some("0")) => Ok(()),
        (code, grpc) => Err(format!("HTTP {code}, grpc-status {grpc:?}")),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The export request of a group.
fn message(group: Group) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", &group.resource, usize::MAX)],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "waypoint".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: group.spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A gRPC message frame: uncompressed flag, big-endian length, the message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode_raw(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts() {
        // Never started: nothing takes spans off the queue.
        let tracer = Tracer::default();
        let provider = Arc::new(Provider {
            name: "otel".into(),
            service: "c".into(),
            namespace: "o".into(),
            port: 4317,
            max_tag_length: 256,
        });
        let resource: Arc<str> = "waypoint.shop".into();
        for _ in 0..QUEUE + 3 {
            tracer.submit(&provider, &resource, Span::default());
        }
        let mut text = String::new();
        tracer.render(&mut text);
        assert!(
            text.contains("waypoint_trace_spans_total{result=\"dropped\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn frames_carry_the_message_length() {
        let m = ExportTraceServiceRequest::default();
        assert_eq!(grpc_frame(&m), vec![0, 0, 0, 0, 0]);
    }
}
