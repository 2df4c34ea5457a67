//! The trace context a request carries, as W3C Trace Context (`traceparent`, `tracestate`)
//! or Zipkin B3 (the single `b3` header, or the `x-b3-*` headers), and the headers written
//! on every request the waypoint sends for a traced service. A valid `traceparent` wins over
//! B3; B3 is written back in the form it came in, so that apps instrumented with Zipkin keep
//! their traces, and W3C is always written.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ids::{hex_into, parse_hex, random_id};

/// W3C `traceparent`.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// B3 in one header: `{trace}-{span}[-{sampling}[-{parent}]]`, or only `{sampling}`.
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// How B3 arrived, and so how it is written on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum B3Form {
    /// The `b3` header.
    Single,
    /// The `x-b3-*` headers.
    Multi,
}

/// What a request carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// The trace (a 64-bit B3 id is left-padded with zeros, as B3 and W3C interoperate).
    pub trace_id: Option<[u8; 16]>,
    /// The caller's span, which this hop's span is a child of.
    pub parent: Option<[u8; 8]>,
    /// The caller's sampling decision; `None`: the caller left it to us.
    pub sampled: Option<bool>,
    /// B3's form, when the request had B3.
    pub b3: Option<B3Form>,
    /// The B3 trace id was 64 bits: it is written back as 64 bits.
    pub b3_short: bool,
}

impl Incoming {
    /// The context in `headers`: a valid `traceparent`, else B3; an invalid one is ignored
    /// (a new trace starts), as W3C asks.
    pub(crate) fn read(headers: &HeaderMap) -> Self {
        let b3 = read_b3(headers);
        let Some((trace_id, parent, sampled)) = header(headers, &TRACEPARENT).and_then(w3c) else {
            return b3.unwrap_or_default();
        };
        Incoming {
            trace_id: Some(trace_id),
            parent: Some(parent),
            sampled: Some(sampled),
            // Written back so that an app forwarding only B3 still joins the trace.
            b3: b3.as_ref().and_then(|b| b.b3),
            b3_short: b3.is_some_and(|b| b.b3_short && b.trace_id == Some(trace_id)),
        }
    }
}

/// A traced request's context as this hop continues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Continued {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This hop's server span.
    pub span_id: [u8; 8],
    /// The caller's span, if any.
    pub parent: Option<[u8; 8]>,
    /// Whether the trace is sampled.
    pub sampled: bool,
    /// B3 form to write, if the request had B3.
    pub b3: Option<B3Form>,
    /// Write the B3 trace id as 64 bits.
    pub b3_short: bool,
}

impl Continued {
    /// Continues `incoming` (a new trace when it had none), keeping its decision or else
    /// sampling `percentage` percent of traces.
    pub(crate) fn from(incoming: &Incoming, percentage: f64) -> Self {
        let sampled = incoming
            .sampled
            .unwrap_or_else(|| percentage > 0.0 && fastrand::f64() * 100.0 < percentage);
        Continued {
            trace_id: incoming.trace_id.unwrap_or_else(random_id),
            span_id: random_id(),
            parent: incoming.parent,
            sampled,
            b3: incoming.b3,
            b3_short: incoming.b3_short,
        }
    }

    /// Writes the context of a request this hop sends as span `span_id` (a child of this
    /// hop's span): `traceparent`, and B3 in its form when the request had B3.
    pub(crate) fn write(&self, headers: &mut HeaderMap, span_id: [u8; 8]) {
        let flag = if self.sampled { b"01" } else { b"00" };
        let mut parent = [b'-'; 55];
        parent[..2].copy_from_slice(b"00");
        hex_into(&mut parent[3..35], &self.trace_id);
        hex_into(&mut parent[36..52], &span_id);
        parent[53..].copy_from_slice(flag);
        insert(headers, TRACEPARENT, &parent);
        let trace = self.b3_trace_hex();
        let trace = &trace[32 - self.b3_trace_len()..];
        let mut span = [0u8; 16];
        hex_into(&mut span, &span_id);
        let mut up = [0u8; 16];
        hex_into(&mut up, &self.span_id);
        let sampled = if self.sampled { b"1" } else { b"0" };
        match self.b3 {
            None => {}
            Some(B3Form::Single) => {
                let value = [trace, b"-", &span, b"-", sampled, b"-", &up].concat();
                insert(headers, B3, &value);
            }
            Some(B3Form::Multi) => {
                insert(headers, B3_TRACE, trace);
                insert(headers, B3_SPAN, &span);
                insert(headers, B3_PARENT, &up);
                insert(headers, B3_SAMPLED, sampled);
                headers.remove(B3_FLAGS);
            }
        }
    }

    fn b3_trace_len(&self) -> usize {
        if self.b3_short { 16 } else { 32 }
    }

    fn b3_trace_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&mut out, &self.trace_id);
        out
    }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &[u8]) {
    if let Ok(v) = HeaderValue::from_bytes(value) {
        headers.insert(name, v);
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Trace id, parent span and sampled flag of a valid `traceparent`.
fn w3c(v: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut it = v.split('-');
    let (version, trace, parent, flags) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    // Future versions may append fields; version 00 has exactly four.
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && it.next().is_some()) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let flags = parse_hex::<1>(flags).map_or(0, |f| f[0]);
    Some((parse_hex(trace)?, parse_hex(parent)?, flags & 1 == 1))
}

/// A B3 trace id: 32 or 16 hex digits (the latter left-padded), and whether it was short.
fn b3_trace(v: &str) -> Option<([u8; 16], bool)> {
    match v.len() {
        32 => parse_hex(v).map(|t| (t, false)),
        16 => parse_hex::<8>(v).map(|low| {
            let mut t = [0u8; 16];
            t[8..].copy_from_slice(&low);
            (t, true)
        }),
        _ => None,
    }
}

/// A B3 sampling state: "1" / "d" (debug) sample, "0" does not; the multi form also says
/// "true" / "false".
fn b3_sampled(v: &str) -> Option<bool> {
    match v {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The B3 context of `headers`, single form first.
fn read_b3(headers: &HeaderMap) -> Option<Incoming> {
    if let Some(v) = header(headers, &B3) {
        return b3_single(v);
    }
    let sampled = header(headers, &B3_FLAGS)
        .filter(|f| *f == "1")
        .map(|_| true)
        .or_else(|| header(headers, &B3_SAMPLED).and_then(b3_sampled));
    let ids = header(headers, &B3_TRACE)
        .and_then(b3_trace)
        .zip(header(headers, &B3_SPAN).and_then(parse_hex::<8>));
    match ids {
        Some(((trace_id, b3_short), span)) => Some(Incoming {
            trace_id: Some(trace_id),
            parent: Some(span),
            sampled,
            b3: Some(B3Form::Multi),
            b3_short,
        }),
        // A decision without ids still decides.
        None => sampled.map(|s| Incoming {
            sampled: Some(s),
            b3: Some(B3Form::Multi),
            ..Default::default()
        }),
    }
}

/// The single `b3` header.
fn b3_single(v: &str) -> Option<Incoming> {
    let parts: Vec<&str> = v.split('-').collect();
    if let [only] = parts.as_slice() {
        return b3_sampled(only).map(|s| Incoming {
            sampled: Some(s),
            b3: Some(B3Form::Single),
            ..Default::default()
        });
    }
    let (trace_id, b3_short) = b3_trace(parts.first()?)?;
    let span = parse_hex::<8>(parts.get(1)?)?;
    let sampled = match parts.get(2) {
        Some(s) => Some(b3_sampled(s)?),
        None => None,
    };
    Some(Incoming {
        trace_id: Some(trace_id),
        parent: Some(span),
        sampled,
        b3: Some(B3Form::Single),
        b3_short,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    #[test]
    fn w3c_is_read_and_a_decision_is_kept() {
        let h = headers(&[("traceparent", &format!("00-{TRACE}-b7ad6b7169203331-00"))]);
        let i = Incoming::read(&h);
        assert_eq!(i.trace_id, parse_hex(TRACE));
        assert_eq!(i.parent, parse_hex("b7ad6b7169203331"));
        assert_eq!(i.sampled, Some(false));
        // 100 % does not override the caller's "not sampled".
        assert!(!Continued::from(&i, 100.0).sampled);
        for bad in [
            format!("00-{TRACE}-0000000000000000-01"),
            format!("00-{}-b7ad6b7169203331-01", "0".repeat(32)),
            format!("00-{}-b7ad6b7169203331-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-b7ad6b7169203331-01-extra"),
            format!("ff-{TRACE}-b7ad6b7169203331-01"),
        ] {
            let h = headers(&[("traceparent", &bad)]);
            assert_eq!(Incoming::read(&h), Incoming::default(), "{bad}");
        }
    }

    #[test]
    fn b3_multi_short_ids_are_padded_and_written_back_short() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let i = Incoming::read(&h);
        assert_eq!(
            i.trace_id,
            parse_hex("0000000000000000463ac35c9f6413ad"),
            "{i:?}"
        );
        assert!(i.b3_short);
        assert_eq!(i.b3, Some(B3Form::Multi));
        let c = Continued::from(&i, 0.0);
        assert!(c.sampled);
        let mut out = HeaderMap::new();
        c.write(&mut out, [1; 8]);
        assert_eq!(out["x-b3-traceid"], "463ac35c9f6413ad");
        assert_eq!(out["x-b3-spanid"], "0101010101010101");
        assert_eq!(
            out["traceparent"],
            "00-0000000000000000463ac35c9f6413ad-0101010101010101-01"
        );
        assert_eq!(
            out["x-b3-parentspanid"].to_str().unwrap(),
            super::super::ids::to_hex(&c.span_id)
        );
        assert_eq!(out["x-b3-sampled"], "1");
    }

    #[test]
    fn b3_single_and_decision_only_forms() {
        let h = headers(&[("b3", &format!("{TRACE}-a2fb4a1d1a96d312-0"))]);
        let i = Incoming::read(&h);
        assert_eq!(i.trace_id, parse_hex(TRACE));
        assert_eq!(i.sampled, Some(false));
        let c = Continued::from(&i, 100.0);
        let mut out = HeaderMap::new();
        c.write(&mut out, [2; 8]);
        let b3 = out["b3"].to_str().unwrap();
        assert!(
            b3.starts_with(&format!("{TRACE}-0202020202020202-0-")),
            "{b3}"
        );
        let only = Incoming::read(&headers(&[("b3", "1")]));
        assert_eq!((only.trace_id, only.sampled), (None, Some(true)));
        let debug = Incoming::read(&headers(&[("x-b3-flags", "1"), ("x-b3-sampled", "0")]));
        assert_eq!(debug.sampled, Some(true));
        assert_eq!(
            Incoming::read(&headers(&[("b3", "nonsense-x")])),
            Incoming::default()
        );
    }

    #[test]
    fn without_a_decision_the_percentage_decides() {
        let none = Incoming::default();
        assert!(Continued::from(&none, 100.0).sampled);
        assert!(!Continued::from(&none, 0.0).sampled);
        let sampled = (0..10_000)
            .filter(|_| Continued::from(&none, 10.0).sampled)
            .count();
        // Binomial(10 000, 0.1): 6 standard deviations either side.
        assert!((820..=1180).contains(&sampled), "{sampled}");
        // A B3 trace id without a sampling state is continued, and decided here.
        let h = headers(&[("x-b3-traceid", TRACE), ("x-b3-spanid", "a2fb4a1d1a96d312")]);
        let c = Continued::from(&Incoming::read(&h), 100.0);
        assert!(c.sampled);
        assert_eq!(Some(c.trace_id), parse_hex(TRACE));
    }

    #[test]
    fn w3c_wins_over_b3_and_both_are_written() {
        let h = headers(&[
            ("traceparent", &format!("00-{TRACE}-b7ad6b7169203331-01")),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        let i = Incoming::read(&h);
        assert_eq!(i.trace_id, parse_hex(TRACE));
        assert_eq!(i.b3, Some(B3Form::Multi));
        assert!(!i.b3_short);
        let mut out = HeaderMap::new();
        Continued::from(&i, 0.0).write(&mut out, [3; 8]);
        assert_eq!(out["x-b3-traceid"], TRACE);
    }
}
