//! The spans the receiver holds: OTLP spans flattened into [`ReceivedSpan`]s (ids as lowercase
//! hex, enums by their OTLP names, attributes as strings), kept in a bounded [`SpanStore`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use api::otlp::collector::ExportTraceServiceRequest;
use api::otlp::common::{AnyValue, KeyValue, any_value};
use api::otlp::trace::{Span, span, status};
use serde::{Deserialize, Serialize};

/// The resource attribute naming the service that reported a span.
pub const SERVICE_NAME: &str = "service.name";

/// One span as `GET /spans` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedSpan {
    /// 16 bytes as 32 lowercase hex digits.
    pub trace_id: String,
    /// 8 bytes as 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id in hex; empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// OTLP's name of the kind, e.g. `SPAN_KIND_SERVER`.
    pub kind: String,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// Attributes, every value rendered as a string (arrays and maps as JSON).
    pub attributes: BTreeMap<String, String>,
    /// OTLP's name of the status code, e.g. `STATUS_CODE_ERROR`.
    pub status: String,
    /// The resource's `service.name`; empty when it has none.
    pub service_name: String,
}

/// Counters of `GET /stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverStats {
    /// Export requests accepted (gRPC and HTTP).
    pub batches_received: u64,
    /// Of those, the ones that came over OTLP/HTTP.
    #[serde(default)]
    pub http_batches_received: u64,
    /// Spans in the accepted requests, held or dropped.
    pub spans_received: u64,
    /// Spans not kept because `--max-spans` were already held.
    pub spans_dropped: u64,
    /// Spans held now (listed by `GET /spans`).
    pub spans_held: u64,
    /// Export requests answered "unavailable" on purpose (`--fail-rate`).
    pub batches_refused: u64,
}

/// The spans received so far, at most `max` of them, and the counters.
#[derive(Debug)]
pub struct SpanStore {
    max: usize,
    inner: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    spans: Vec<ReceivedSpan>,
    stats: ReceiverStats,
}

impl SpanStore {
    /// An empty store keeping at most `max` spans.
    pub fn new(max: usize) -> Self {
        SpanStore {
            max,
            inner: Mutex::new(Held::default()),
        }
    }

    /// Records one accepted export request; returns the spans it kept, in order.
    pub fn record(&self, request: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
        let spans = flatten(request);
        let mut held = self.lock();
        let room = self.max.saturating_sub(held.spans.len());
        let kept: Vec<ReceivedSpan> = spans.iter().take(room).cloned().collect();
        held.stats.batches_received += 1;
        held.stats.spans_received += spans.len() as u64;
        held.stats.spans_dropped += (spans.len() - kept.len()) as u64;
        held.spans.extend(kept.iter().cloned());
        held.stats.spans_held = held.spans.len() as u64;
        kept
    }

    /// Counts an accepted export request as having come over OTLP/HTTP.
    pub fn count_http(&self) {
        self.lock().stats.http_batches_received += 1;
    }

    /// Counts an export request answered "unavailable" on purpose.
    pub fn refuse(&self) {
        self.lock().stats.batches_refused += 1;
    }

    /// Every span held, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.lock().spans.clone()
    }

    /// The counters.
    pub fn stats(&self) -> ReceiverStats {
        self.lock().stats
    }

    /// Forgets the spans held (the counters of what was received stay); the counters after.
    pub fn clear(&self) -> ReceiverStats {
        let mut held = self.lock();
        held.spans.clear();
        held.stats.spans_held = 0;
        held.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every span of `request`, with its resource's service name.
pub fn flatten(request: &ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == SERVICE_NAME))
            .map(|kv| render(kv.value.as_ref()))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            out.extend(scope_spans.spans.iter().map(|s| received(s, &service_name)));
        }
    }
    out
}

fn received(span: &Span, service_name: &str) -> ReceivedSpan {
    let kind = span::SpanKind::try_from(span.kind)
        .map_or_else(|_| span.kind.to_string(), |k| k.as_str_name().to_string());
    let code = span.status.as_ref().map_or(0, |s| s.code);
    let status = status::StatusCode::try_from(code)
        .map_or_else(|_| code.to_string(), |c| c.as_str_name().to_string());
    ReceivedSpan {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name.clone(),
        kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes: attributes(&span.attributes),
        status,
        service_name: service_name.to_string(),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref())))
        .collect()
}

/// An attribute value as text: scalars as themselves, bytes as hex, arrays and maps as JSON.
fn render(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(array)) => {
            let items: Vec<String> = array.values.iter().map(|v| render(Some(v))).collect();
            serde_json::Value::from(items).to_string()
        }
        Some(any_value::Value::KvlistValue(map)) => {
            serde_json::to_string(&attributes(&map.values)).unwrap_or_default()
        }
    }
}

/// Lowercase hex, as trace ids are written in `traceparent`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::otlp::common::{ArrayValue, KeyValueList};
    use api::otlp::resource::Resource;
    use api::otlp::trace::{ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    fn request(service: &str, names: &[&str]) -> ExportTraceServiceRequest {
        let spans = names
            .iter()
            .enumerate()
            .map(|(i, name)| Span {
                trace_id: vec![0xab; 16],
                span_id: vec![i as u8 + 1; 8],
                name: name.to_string(),
                kind: span::SpanKind::Client as i32,
                ..Span::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        SERVICE_NAME,
                        any_value::Value::StringValue(service.into()),
                    )],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[test]
    fn flattens_ids_enums_and_attribute_values() {
        let mut req = request("waypoint.shop", &["orders.shop.svc.cluster.local:8080/*"]);
        let span = &mut req.resource_spans[0].scope_spans[0].spans[0];
        span.parent_span_id = vec![0x0f, 0, 0, 0, 0, 0, 0, 0xa0];
        span.start_time_unix_nano = 1_700_000_000_000_000_001;
        span.end_time_unix_nano = 1_700_000_000_000_000_900;
        span.status = Some(Status {
            code: status::StatusCode::Error as i32,
            ..Status::default()
        });
        span.attributes = vec![
            kv("http.status_code", any_value::Value::IntValue(503)),
            kv("retry", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("raw", any_value::Value::BytesValue(vec![1, 0xfe])),
            kv(
                "list",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::StringValue("a".into())),
                    }],
                }),
            ),
            kv(
                "map",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", any_value::Value::IntValue(1))],
                }),
            ),
        ];
        let spans = flatten(&req);
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.trace_id, "ab".repeat(16));
        assert_eq!(s.span_id, "0101010101010101");
        assert_eq!(s.parent_span_id, "0f000000000000a0");
        assert_eq!(s.kind, "SPAN_KIND_CLIENT");
        assert_eq!(s.status, "STATUS_CODE_ERROR");
        assert_eq!(s.service_name, "waypoint.shop");
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_700_000_000_000_000_001, 1_700_000_000_000_000_900)
        );
        let attrs: Vec<(&str, &str)> = s
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            attrs,
            [
                ("http.status_code", "503"),
                ("list", r#"["a"]"#),
                ("map", r#"{"k":"1"}"#),
                ("ratio", "0.5"),
                ("raw", "01fe"),
                ("retry", "true"),
            ]
        );
    }

    #[test]
    fn a_root_span_without_resource_has_empty_parent_and_service() {
        let mut req = request("x", &["root"]);
        req.resource_spans[0].resource = None;
        let s = &flatten(&req)[0];
        assert_eq!(
            (s.parent_span_id.as_str(), s.service_name.as_str()),
            ("", "")
        );
        assert_eq!(s.status, "STATUS_CODE_UNSET");
    }

    #[test]
    fn the_store_keeps_at_most_max_and_counts_the_rest_as_dropped() {
        let store = SpanStore::new(3);
        assert_eq!(store.record(&request("a", &["1", "2"])).len(), 2);
        let kept = store.record(&request("a", &["3", "4", "5"]));
        assert_eq!(
            kept.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["3"]
        );
        store.refuse();
        let names: Vec<String> = store.spans().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["1", "2", "3"]);
        let expected = ReceiverStats {
            batches_received: 2,
            spans_received: 5,
            spans_dropped: 2,
            spans_held: 3,
            batches_refused: 1,
            http_batches_received: 0,
        };
        assert_eq!(store.stats(), expected);
        let cleared = store.clear();
        assert_eq!(cleared.spans_held, 0);
        assert_eq!(cleared.spans_received, 5);
        assert!(store.spans().is_empty());
        assert_eq!(store.record(&request("a", &["6"])).len(), 1, "room again");
    }
}
