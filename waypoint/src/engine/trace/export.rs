//! Span export: finished spans go into a bounded queue (a full queue drops the span and
//! counts it, never blocking a request); one task, woken once per batch (full, or a second
//! after its first span) rather than per span, takes them in batches and sends each batch
//! to its provider's collector as an OTLP/gRPC `TraceService/Export` call, or an OTLP/HTTP
//! `POST` of the same protobuf when the provider says `http`, over the mesh (an
//! endpoint of the collector's service, through the waypoint's own upstream connections:
//! HBONE to ambient pods, plain TCP otherwise), with the provider's headers. One export is
//! in flight at a time, under the provider's deadline: a slow collector fills the queue, and
//! the rest is counted as dropped.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api::otlp::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use api::otlp::resource::Resource;
use api::prost::Message;
use api::prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use http_body_util::BodyExt;
use prometheus_registry::text;
use tokio::sync::{Notify, mpsc};

use super::super::body;
use super::super::origin::Caller;
use super::super::upstream::{UpstreamClient, UpstreamError};
use super::spec::Provider;

/// Spans waiting for export; beyond this they are dropped (OpenTelemetry's default queue).
const QUEUE: usize = 2048;
/// Spans per export call (OpenTelemetry's default batch).
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const FLUSH: Duration = Duration::from_secs(1);
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const SPANS: &str = "waypoint_trace_spans_total";

/// A finished span and where it goes.
struct Finished {
    provider: Arc<Provider>,
    resource: Arc<str>,
    /// An encoded OTLP `Span`.
    span: Vec<u8>,
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
    /// Wakes the export task once a batch is waiting, rather than for every span.
    full: Arc<Notify>,
}

impl Default for Tracer {
    fn default() -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        Self {
            queue,
            pending: Mutex::new(Some(pending)),
            started: OnceLock::new(),
            counters: Arc::default(),
            full: Arc::default(),
        }
    }
}

impl Tracer {
    /// Starts the export task (once) with the transport spans are sent through.
    pub(crate) fn start(&self, upstream: &Arc<dyn UpstreamClient>) {
        self.started.get_or_init(|| {
            let receiver = self.pending.lock().ok().and_then(|mut p| p.take());
            if let Some(receiver) = receiver {
                let (full, counters) = (self.full.clone(), self.counters.clone());
                tokio::spawn(run(receiver, full, upstream.clone(), counters));
            }
        });
    }

    /// Queues `span` (an encoded OTLP `Span`) for `provider`, or counts it dropped when the
    /// queue is full.
    pub(crate) fn submit(&self, provider: &Arc<Provider>, resource: &Arc<str>, span: Vec<u8>) {
        let finished = Finished {
            provider: provider.clone(),
            resource: resource.clone(),
            span,
        };
        if self.queue.try_send(finished).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        } else if QUEUE - self.queue.capacity() >= BATCH {
            self.full.notify_one();
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
    full: Arc<Notify>,
    upstream: Arc<dyn UpstreamClient>,
    counters: Arc<Counters>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        // The batch fills without a wake per span: a full batch (signalled by `submit`) or
        // the flush time ends the wait.
        let _ = tokio::time::timeout(FLUSH, full.notified()).await;
        loop {
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            let more = batch.len() == BATCH;
            export_batch(&upstream, &counters, std::mem::take(&mut batch)).await;
            if !more {
                break;
            }
        }
    }
}

/// Exports one batch, a call per collector and resource, and counts the outcome.
async fn export_batch(
    upstream: &Arc<dyn UpstreamClient>,
    counters: &Counters,
    batch: Vec<Finished>,
) {
    for group in by_destination(batch) {
        let n = group.spans.len() as u64;
        let provider = group.provider.clone();
        let sent = tokio::time::timeout(provider.timeout, export(upstream, group)).await;
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

/// Spans of one batch that go to one collector with one resource.
struct Group {
    provider: Arc<Provider>,
    resource: Arc<str>,
    spans: Vec<Vec<u8>>,
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

/// One export of `group` to an endpoint of its collector: an OTLP/gRPC `Export` call, or
/// an OTLP/HTTP `POST` of the same request as a protobuf.
async fn export(upstream: &Arc<dyn UpstreamClient>, group: Group) -> Result<(), String> {
    let p = group.provider.clone();
    let endpoints = upstream.endpoints(&p.namespace, &p.service, p.port);
    let endpoint = fastrand::choice(&endpoints)
        .ok_or_else(|| format!("no endpoint of {}:{}", p.service, p.port))?;
    let frame = bytes::Bytes::from(grpc_frame(&group));
    let authority = format!("{}:{}", p.service, p.port);
    let builder = match &p.http_path {
        Some(path) => http::Request::post(format!("http://{authority}{path}"))
            .version(http::Version::HTTP_11)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf"),
        None => http::Request::post(format!("http://{authority}{EXPORT_PATH}"))
            .version(http::Version::HTTP_2)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers"),
    };
    let mut request = builder
        // OTLP/HTTP carries the request without gRPC's 5-byte frame header.
        .body(body::full(match p.http_path {
            Some(_) => frame.slice(5..),
            None => frame,
        }))
        .map_err(|e| e.to_string())?;
    for (name, value) in &p.headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
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
    if p.http_path.is_some() {
        return match status.is_success() {
            true => Ok(()),
            false => Err(format!("HTTP {}", status.as_u16())),
        };
    }
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

/// The gRPC frame (uncompressed flag, big-endian length) of the export request of a group:
/// `ExportTraceServiceRequest { resource_spans: [{ resource, scope_spans: [{ scope, spans }] }] }`
/// around the spans as they were encoded.
fn grpc_frame(group: &Group) -> Vec<u8> {
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(group.resource.to_string())),
            }),
        }],
        dropped_attributes_count: 0,
    };
    let scope = InstrumentationScope {
        name: "waypoint".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let field = |len: usize| 1 + encoded_len_varint(len as u64) + len;
    let scope_spans =
        field(scope.encoded_len()) + group.spans.iter().map(|s| field(s.len())).sum::<usize>();
    let resource_spans = field(resource.encoded_len()) + field(scope_spans);
    let request = field(resource_spans);
    let mut out = Vec::with_capacity(5 + request);
    out.push(0);
    out.extend_from_slice(&(request as u32).to_be_bytes());
    let open = |out: &mut Vec<u8>, tag: u32, len: usize| {
        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
    };
    open(&mut out, 1, resource_spans);
    open(&mut out, 1, resource.encoded_len());
    resource.encode_raw(&mut out);
    open(&mut out, 2, scope_spans);
    open(&mut out, 1, scope.encoded_len());
    scope.encode_raw(&mut out);
    for span in &group.spans {
        open(&mut out, 2, span.len());
        out.extend_from_slice(span);
    }
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
            http_path: None,
            timeout: Duration::from_secs(5),
            headers: Vec::new(),
        });
        let resource: Arc<str> = "waypoint.shop".into();
        for _ in 0..QUEUE + 3 {
            tracer.submit(&provider, &resource, Vec::new());
        }
        let mut text = String::new();
        tracer.render(&mut text);
        assert!(
            text.contains("waypoint_trace_spans_total{result=\"dropped\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn frames_hold_the_export_request_around_the_encoded_spans() {
        use api::otlp::collector::ExportTraceServiceRequest;
        use api::otlp::trace::Span;
        let span = |id: u8| Span {
            span_id: vec![id; 8],
            name: "s".repeat(200),
            ..Default::default()
        };
        let group = Group {
            provider: Arc::new(Provider {
                name: "otel".into(),
                service: "c".into(),
                namespace: "o".into(),
                port: 4317,
                max_tag_length: 256,
                http_path: None,
                timeout: Duration::from_secs(5),
                headers: Vec::new(),
            }),
            resource: "waypoint.shop".into(),
            spans: (1..=3).map(|i| span(i).encode_to_vec()).collect(),
        };
        let frame = grpc_frame(&group);
        assert_eq!(frame[0], 0);
        let len = u32::from_be_bytes(frame[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 5);
        let request = ExportTraceServiceRequest::decode(&frame[5..]).unwrap();
        let rs = &request.resource_spans[0];
        let name = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(name.key, "service.name");
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(*spans, (1..=3).map(span).collect::<Vec<_>>());
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "waypoint");
    }
}
