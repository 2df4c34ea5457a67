//! Spans as OTLP encodes them: ids, times, kind, attributes (values cut to the provider's
//! limit) and status.

use std::time::{SystemTime, UNIX_EPOCH};

use api::otlp::common::{AnyValue, KeyValue, any_value};
use api::otlp::trace::{self as otlp, span, status};

/// A span's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanKind {
    /// The request the waypoint received.
    Server,
    /// A request the waypoint sent.
    Client,
}

/// What a span is made of.
pub(crate) struct SpanParts {
    /// Its trace.
    pub trace_id: [u8; 16],
    /// Its id.
    pub span_id: [u8; 8],
    /// Its parent, if any.
    pub parent: Option<[u8; 8]>,
    /// Whether its trace is sampled (the W3C flag).
    pub sampled: bool,
    /// Its name.
    pub name: String,
    /// Its role.
    pub kind: SpanKind,
    /// Start.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Whether the operation failed.
    pub error: bool,
    /// Its attributes.
    pub attributes: Vec<KeyValue>,
}

impl SpanParts {
    /// The OTLP span.
    pub(crate) fn build(self) -> otlp::Span {
        otlp::Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            // The W3C flags, and "the parent is known, and remote" for a continued trace.
            flags: u32::from(self.sampled) | if self.parent.is_some() { 0x300 } else { 0x100 },
            name: self.name,
            kind: match self.kind {
                SpanKind::Server => span::SpanKind::Server,
                SpanKind::Client => span::SpanKind::Client,
            } as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(self.end.max(self.start)),
            attributes: self.attributes,
            status: self.error.then(|| otlp::Status {
                message: String::new(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A string attribute, its value cut to `max_len` bytes (at a character boundary).
pub(crate) fn attribute(key: &str, value: &str, max_len: usize) -> KeyValue {
    let mut end = value.len().min(max_len);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value[..end].to_owned())),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spans_carry_ids_times_kind_and_errors() {
        let start = UNIX_EPOCH + Duration::from_secs(10);
        let s = SpanParts {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            sampled: true,
            name: "orders.shop.svc.cluster.local:8080/*".into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(5),
            error: true,
            attributes: vec![attribute("http.method", "GET", 256)],
        }
        .build();
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 10_000_000_000);
        assert_eq!(s.end_time_unix_nano, 10_005_000_000);
        assert_eq!(s.status.unwrap().code, status::StatusCode::Error as i32);
    }

    #[test]
    fn attribute_values_are_cut_at_a_character_boundary() {
        let a = attribute("k", "héllo", 2);
        let Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }) = a.value
        else {
            panic!("not a string");
        };
        assert_eq!(v, "h");
    }
}
