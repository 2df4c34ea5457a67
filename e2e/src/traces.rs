//! The OTLP receiver (`meshctl app otlp-receiver`) of a sandbox, as tests read it: the spans it
//! holds and its counters, fetched from inside a pod with `meshctl app curl`, a wait for a
//! number of spans to arrive, and the spans grouped into traces.

use std::collections::BTreeMap;
use std::time::Duration;

pub use meshctl::app::otlp_receiver::{ReceivedSpan, ReceiverStats};
use meshctl::app::otlp_receiver::{SPANS_PATH, STATS_PATH};
use serde::de::DeserializeOwned;

use crate::{Error, Result, Sandbox, eventually};

/// GETs `receiver` + `path` from inside `pod` and parses the JSON answer.
fn get_json<T: DeserializeOwned>(sb: &Sandbox, pod: &str, receiver: &str, path: &str) -> Result<T> {
    let url = format!("{}{path}", receiver.trim_end_matches('/'));
    let body = sb.http(pod, &url)?;
    serde_json::from_str(&body).map_err(|e| {
        Error::Parse(format!(
            "{url} from {pod} is not the expected JSON ({e}): {body}"
        ))
    })
}

/// Every span the receiver at `receiver` (a base URL such as
/// `http://otel-collector.observability:4317`) holds, in arrival order, fetched from inside
/// `pod` (`name` or `namespace/name`).
pub fn received_spans(sb: &Sandbox, pod: &str, receiver: &str) -> Result<Vec<ReceivedSpan>> {
    get_json(sb, pod, receiver, SPANS_PATH)
}

/// The receiver's counters (batches and spans received, spans dropped by its cap).
pub fn receiver_stats(sb: &Sandbox, pod: &str, receiver: &str) -> Result<ReceiverStats> {
    get_json(sb, pod, receiver, STATS_PATH)
}

/// Polls the receiver until it holds at least `count` spans, and returns them; an error naming
/// how many had arrived when `limit` passed.
pub fn wait_for_spans(
    sb: &Sandbox,
    pod: &str,
    receiver: &str,
    count: usize,
    limit: Duration,
) -> Result<Vec<ReceivedSpan>> {
    let mut last: Result<Vec<ReceivedSpan>> = Ok(Vec::new());
    let arrived = eventually(limit, || {
        last = received_spans(sb, pod, receiver);
        last.as_ref().is_ok_and(|spans| spans.len() >= count)
    });
    match last {
        Ok(spans) if arrived => Ok(spans),
        Ok(spans) => Err(Error::Timeout(format!(
            "{receiver} holds {} spans after {limit:?}, expected at least {count}",
            spans.len()
        ))),
        Err(e) => Err(e),
    }
}

/// `spans` grouped by trace id, each trace's spans in arrival order.
pub fn by_trace(spans: &[ReceivedSpan]) -> BTreeMap<String, Vec<ReceivedSpan>> {
    let mut traces: BTreeMap<String, Vec<ReceivedSpan>> = BTreeMap::new();
    for span in spans {
        traces
            .entry(span.trace_id.clone())
            .or_default()
            .push(span.clone());
    }
    traces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str) -> ReceivedSpan {
        ReceivedSpan {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: String::new(),
            name: id.into(),
            kind: "SPAN_KIND_SERVER".into(),
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            attributes: BTreeMap::new(),
            status: "STATUS_CODE_UNSET".into(),
            service_name: String::new(),
        }
    }

    #[test]
    fn spans_group_by_trace_in_arrival_order() {
        let spans = [span("b", "1"), span("a", "2"), span("b", "3")];
        let traces = by_trace(&spans);
        let ids: Vec<(&str, Vec<&str>)> = traces
            .iter()
            .map(|(trace, spans)| {
                let ids = spans.iter().map(|s| s.span_id.as_str()).collect();
                (trace.as_str(), ids)
            })
            .collect();
        assert_eq!(ids, [("a", vec!["2"]), ("b", vec!["1", "3"])]);
    }
}
