//! Spans encoded as OTLP `Span` messages straight from what the request recorded: ids,
//! times, kind, attributes (values cut to the provider's limit) and status. Each span is one
//! buffer, written once, with no intermediate message structs: a traced request costs a
//! few hundred bytes of copying rather than a few dozen allocations.

use std::fmt::Display;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use api::prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// OTLP's span kinds.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
/// OTLP's `STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

/// A span's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanKind {
    /// The request the waypoint received.
    Server,
    /// A request the waypoint sent.
    Client,
}

/// String attributes, encoded as OTLP `Span.attributes` entries as they are added.
#[derive(Clone, Debug, Default)]
pub(crate) struct Attributes {
    encoded: Vec<u8>,
    max_len: usize,
}

impl Attributes {
    /// No attributes yet; values will be cut to `max_len` bytes.
    pub(crate) fn new(max_len: usize) -> Self {
        Self {
            encoded: Vec::with_capacity(512),
            max_len,
        }
    }

    /// Adds `key` = `value`, the value cut to the limit at a character boundary.
    pub(crate) fn add(&mut self, key: &str, value: &str) {
        let mut end = value.len().min(self.max_len);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let value = &value[..end];
        // KeyValue { key = 1, value = 2: AnyValue { string_value = 1 } }.
        let any = 1 + encoded_len_varint(value.len() as u64) + value.len();
        let kv = 1
            + encoded_len_varint(key.len() as u64)
            + key.len()
            + 1
            + encoded_len_varint(any as u64)
            + any;
        let buf = &mut self.encoded;
        encode_key(9, WireType::LengthDelimited, buf);
        encode_varint(kv as u64, buf);
        string_field(buf, 1, key.as_bytes());
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(any as u64, buf);
        string_field(buf, 1, value.as_bytes());
    }

    /// Adds `key` = `value` as text (numbers, addresses).
    pub(crate) fn add_display(&mut self, key: &str, value: impl Display) {
        let mut text = String::with_capacity(24);
        let _ = write!(text, "{value}");
        self.add(key, &text);
    }

    /// Adds every attribute of `other`.
    pub(crate) fn extend(&mut self, other: &Attributes) {
        self.encoded.extend_from_slice(&other.encoded);
    }
}

/// A length-delimited field.
fn string_field(buf: &mut Vec<u8>, tag: u32, value: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.extend_from_slice(value);
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
    pub attributes: Attributes,
}

impl SpanParts {
    /// The OTLP `Span` message.
    pub(crate) fn encode(self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(96 + self.name.len() + self.attributes.encoded.len());
        string_field(&mut buf, 1, &self.trace_id);
        string_field(&mut buf, 2, &self.span_id);
        if let Some(parent) = &self.parent {
            string_field(&mut buf, 4, parent);
        }
        string_field(&mut buf, 5, self.name.as_bytes());
        encode_key(6, WireType::Varint, &mut buf);
        encode_varint(
            match self.kind {
                SpanKind::Server => KIND_SERVER,
                SpanKind::Client => KIND_CLIENT,
            },
            &mut buf,
        );
        encode_key(7, WireType::SixtyFourBit, &mut buf);
        buf.extend_from_slice(&nanos(self.start).to_le_bytes());
        encode_key(8, WireType::SixtyFourBit, &mut buf);
        buf.extend_from_slice(&nanos(self.end.max(self.start)).to_le_bytes());
        buf.extend_from_slice(&self.attributes.encoded);
        if self.error {
            // Status { code = 3 }.
            encode_key(15, WireType::LengthDelimited, &mut buf);
            encode_varint(2, &mut buf);
            encode_key(3, WireType::Varint, &mut buf);
            encode_varint(STATUS_ERROR, &mut buf);
        }
        // The W3C flags, and "the parent is known, and remote" for a continued trace.
        let flags = u32::from(self.sampled) | if self.parent.is_some() { 0x300 } else { 0x100 };
        encode_key(16, WireType::ThirtyTwoBit, &mut buf);
        buf.extend_from_slice(&flags.to_le_bytes());
        buf
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::otlp::common::any_value::Value;
    use api::otlp::trace::{Span, span, status};
    use api::prost::Message;
    use std::time::Duration;

    fn decoded(parts: SpanParts) -> Span {
        Span::decode(parts.encode().as_slice()).expect("a valid Span")
    }

    #[test]
    fn spans_carry_ids_times_kind_attributes_and_errors() {
        let start = UNIX_EPOCH + Duration::from_secs(10);
        let mut attributes = Attributes::new(256);
        attributes.add("http.method", "GET");
        attributes.add_display("http.status_code", 503);
        let s = decoded(SpanParts {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            sampled: true,
            name: "orders.shop.svc.cluster.local:8080/*".into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(5),
            error: true,
            attributes,
        });
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.name, "orders.shop.svc.cluster.local:8080/*");
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 10_000_000_000);
        assert_eq!(s.end_time_unix_nano, 10_005_000_000);
        assert_eq!(s.status.unwrap().code, status::StatusCode::Error as i32);
        let attrs: Vec<(String, Value)> = s
            .attributes
            .into_iter()
            .map(|a| (a.key, a.value.unwrap().value.unwrap()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                ("http.method".into(), Value::StringValue("GET".into())),
                ("http.status_code".into(), Value::StringValue("503".into())),
            ]
        );
    }

    #[test]
    fn a_root_client_span_without_error() {
        let s = decoded(SpanParts {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            sampled: false,
            name: String::new(),
            kind: SpanKind::Client,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            error: false,
            attributes: Attributes::new(256),
        });
        assert!(s.parent_span_id.is_empty() && s.status.is_none());
        assert_eq!((s.flags, s.kind), (0x100, span::SpanKind::Client as i32));
    }

    #[test]
    fn attribute_values_are_cut_at_a_character_boundary() {
        let mut a = Attributes::new(2);
        // 300 bytes: a length that takes two varint bytes.
        a.add(&"k".repeat(300), "héllo");
        let s = decoded(SpanParts {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            sampled: true,
            name: "n".into(),
            kind: SpanKind::Client,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            error: false,
            attributes: a,
        });
        let value = s.attributes[0].value.clone().unwrap().value.unwrap();
        assert_eq!(value, Value::StringValue("h".into()));
        assert_eq!(s.attributes[0].key.len(), 300);
    }
}
