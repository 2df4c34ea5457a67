//! Request telemetry with Istio's metric names and labels ([`labels`], built once per
//! workload and per service rather than per request), per-route metrics with Linkerd's
//! ([`routes`], built once per route), and one access log line per request (target
//! `access`, written to stdout by its own thread: [`access`]).
//!
//! The registry belongs to each [`super::Runtime`] rather than to the process, so several
//! waypoints in one process (tests, the sandbox) each report only their own requests. A request
//! is recorded when its response body ends (or is abandoned), so durations and byte counts
//! cover the whole exchange, as Envoy's do.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use prometheus_registry::{Histogram, Registry, text};
use tokio::time::Instant;

use proxy_core::tap::Tap;

use super::body::{Body, BoxError};
use super::downstream::{Fault, Watch};
use super::trace::Tracer;

mod access;
pub(crate) mod labels;
mod overrides;
mod record;
mod routes;
mod spans;

pub(crate) use labels::{PeerLabels, Peers, RequestLabels, ServiceLabels};
pub(crate) use overrides::MetricOverrides;
pub(crate) use record::{Authority, RequestRecord, TraceId};
pub(crate) use routes::{RouteKey, RouteMetrics, RouteTelemetry};

const REQUESTS: &str = "istio_requests_total";
const DURATION: &str = "istio_request_duration_milliseconds";
const REQUEST_BYTES: &str = "istio_request_bytes";
const RESPONSE_BYTES: &str = "istio_response_bytes";
const OVERFLOW: &str = "waypoint_metrics_series_overflow_total";
const ACCESS_LOG_DROPPED: &str = "waypoint_access_log_lines_dropped_total";
const TAP_DROPPED: &str = "waypoint_tap_events_dropped_total";

/// Envoy's default histogram buckets, which Istio's standard metrics use for durations (ms)
/// and sizes (bytes) alike.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Sums are kept in thousandths, so fractional milliseconds add up.
const SUM_SCALE: f64 = 1000.0;

/// The values of one label set.
struct Series {
    requests: AtomicU64,
    duration: Histogram<{ BUCKETS.len() }>,
    request_bytes: Histogram<{ BUCKETS.len() }>,
    response_bytes: Histogram<{ BUCKETS.len() }>,
    /// With metric overrides: each metric's label set (`None`: the metric is disabled).
    overridden: OnceLock<[Option<String>; 4]>,
}

impl Series {
    /// The label set metric `family` (in [`overrides::METRICS`] order) is reported with, or
    /// `None` when an override disables it.
    fn labels<'s>(
        &'s self,
        series: &'s prometheus_registry::Series<Series>,
        family: usize,
    ) -> Option<&'s str> {
        match self.overridden.get() {
            Some(per_metric) => per_metric[family].as_deref(),
            None => Some(&series.labels),
        }
    }
}

impl Default for Series {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            duration: Histogram::new(&BUCKETS, SUM_SCALE),
            request_bytes: Histogram::new(&BUCKETS, SUM_SCALE),
            response_bytes: Histogram::new(&BUCKETS, SUM_SCALE),
            overridden: OnceLock::new(),
        }
    }
}

/// The waypoint's request metrics and access log.
#[derive(Default)]
pub(crate) struct RequestMetrics {
    series: Registry<RequestLabels, Series>,
    /// Per route, beside Istio's metrics (which have no route label).
    pub(crate) routes: RouteMetrics,
    access: access::AccessLog,
    /// Live requests for `meshctl tap`.
    pub(crate) tap: Arc<Tap>,
    /// Spans of traced requests, on their way to a collector.
    pub(crate) spans: Tracer,
}

impl RequestMetrics {
    /// Counts one finished request and logs it.
    pub(crate) fn finished(&self, r: &RequestRecord) {
        self.record(r);
        if !r.access_log_disabled {
            self.access.log(r);
        }
        self.tap.publish(|| r.tap_event());
        spans::export(&self.spans, r);
    }

    /// Counts one finished request, and under its route when it reached a service.
    fn record(&self, r: &RequestRecord) {
        self.series.with(&r.labels, labels::render, |s| {
            if let Some(o) = &r.labels.overrides {
                s.overridden.get_or_init(|| {
                    o.families
                        .each_ref()
                        .map(|f| (!f.disabled).then(|| labels::render_overridden(&r.labels, f)))
                });
            }
            s.requests.fetch_add(1, Ordering::Relaxed);
            s.duration.observe(r.duration.as_secs_f64() * 1000.0);
            s.request_bytes.observe(r.request_bytes as f64);
            s.response_bytes.observe(r.response_bytes as f64);
        });
        if let Some(route) = &r.route {
            self.routes
                .record(route, r.labels.response_code, r.duration);
        }
    }

    /// Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let series = self.series.sorted();
        let mut out = String::with_capacity(1024 + series.len() * 12_000);
        text::family(
            &mut out,
            REQUESTS,
            "Requests handled by this waypoint.",
            "counter",
        );
        for s in &series {
            if let Some(labels) = s.values.labels(s, 0) {
                let requests = s.values.requests.load(Ordering::Relaxed);
                let _ = writeln!(out, "{REQUESTS}{labels} {requests}");
            }
        }
        type Pick = fn(&Series) -> &Histogram<{ BUCKETS.len() }>;
        let histograms: [(&str, &str, Pick); 3] = [
            (DURATION, "Request duration in milliseconds.", |s| {
                &s.duration
            }),
            (REQUEST_BYTES, "Request body sizes in bytes.", |s| {
                &s.request_bytes
            }),
            (RESPONSE_BYTES, "Response body sizes in bytes.", |s| {
                &s.response_bytes
            }),
        ];
        for (family, (name, help, pick)) in histograms.into_iter().enumerate() {
            text::family(&mut out, name, help, "histogram");
            for s in &series {
                if let Some(labels) = s.values.labels(s, family + 1) {
                    pick(&s.values).render(&mut out, name, labels);
                }
            }
        }
        self.series.render_overflow(
            &mut out,
            OVERFLOW,
            "Requests not counted: the number of label sets is at its bound.",
        );
        text::family(
            &mut out,
            ACCESS_LOG_DROPPED,
            "Access log lines dropped because stdout did not keep up.",
            "counter",
        );
        let _ = writeln!(out, "{ACCESS_LOG_DROPPED} {}", self.access.dropped());
        text::family(
            &mut out,
            TAP_DROPPED,
            "Tapped requests dropped because a tap client did not keep up.",
            "counter",
        );
        let _ = writeln!(out, "{TAP_DROPPED} {}", self.tap.dropped_total());
        self.spans.render(&mut out);
        self.routes.render(&mut out);
        out
    }
}

/// Counts the bytes of a request body as the upstream reads them.
pub(crate) struct CountingBody {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl CountingBody {
    /// Wraps `inner`; the total appears in `count`.
    pub(crate) fn new(inner: Body, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled
            && let Some(d) = f.data_ref()
        {
            self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is needed to record a request once its response ends.
pub(crate) struct Finish {
    /// Where to count it.
    pub metrics: Arc<RequestMetrics>,
    /// The record, without duration and sizes.
    pub record: RequestRecord,
    /// When the request arrived.
    pub started: Instant,
    /// Request body bytes read so far.
    pub request_bytes: Arc<AtomicU64>,
    /// Held until the response ends: pool slots and in-flight counters.
    pub guards: Vec<Box<dyn Send + Sync>>,
    /// The client's side: a response that breaks because the request body did is flagged
    /// for the client, not the upstream.
    pub downstream: Watch,
    /// Bytes relayed to the client after a 101, counted as response body.
    pub upgraded_response_bytes: Option<Arc<AtomicU64>>,
}

/// A response body that records the request when it ends or is dropped.
pub(crate) struct ObservedBody {
    inner: Body,
    bytes: u64,
    finish: Option<Finish>,
}

impl ObservedBody {
    /// Wraps a response body.
    pub(crate) fn new(inner: Body, finish: Finish) -> Self {
        Self {
            inner,
            bytes: 0,
            finish: Some(finish),
        }
    }

    fn complete(&mut self, flag: Option<&str>) {
        let Some(mut f) = self.finish.take() else {
            return;
        };
        if let Some(flag) = flag {
            let flags = &mut f.record.labels.response_flags;
            if flags.is_empty() || flags == "-" {
                *flags = flag.to_string();
            } else {
                flags.push(',');
                flags.push_str(flag);
            }
        }
        f.record.duration = f.started.elapsed();
        f.record.response_bytes = self.bytes
            + f.upgraded_response_bytes
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed));
        f.record.request_bytes = f.request_bytes.load(Ordering::Relaxed);
        f.metrics.finished(&f.record);
        drop(f.guards);
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // The client went away before the end of the response, unless its request had
        // already failed on its side (and is flagged for that).
        let failed = self
            .finish
            .as_ref()
            .is_some_and(|f| f.downstream.fault().is_some());
        self.complete((!failed).then_some("DC"));
    }
}

impl HttpBody for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                } else if let Some(t) = frame.trailers_ref()
                    && let Some(status) = t.get("grpc-status").and_then(|v| v.to_str().ok())
                    && let Some(f) = self.finish.as_mut()
                {
                    f.record.labels.grpc_response_status = labels::grpc_status(status);
                }
                if self.inner.is_end_stream() {
                    self.complete(None);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                let flag = self
                    .finish
                    .as_ref()
                    .and_then(|f| f.downstream.fault())
                    .map_or("UR", Fault::flag);
                self.complete(Some(flag).filter(|f| !f.is_empty()));
            }
            Poll::Ready(None) => self.complete(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The sum of the `istio_requests_total` samples of `rendered` whose labels include every
/// `(name, value)` of `needle`, for tests.
#[cfg(test)]
pub(crate) fn count_of(rendered: &str, needle: &[(&str, &str)]) -> u64 {
    use prometheus_registry::scrape;
    scrape::sum(&scrape::parse(rendered), REQUESTS, needle) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn finish(metrics: &Arc<RequestMetrics>, code: u16) -> Finish {
        Finish {
            metrics: metrics.clone(),
            record: RequestRecord {
                labels: RequestLabels {
                    service: Arc::new(ServiceLabels::new(
                        "orders.shop.svc.cluster.local",
                        "orders",
                        "shop",
                    )),
                    request_protocol: "http",
                    response_code: code,
                    ..Default::default()
                },
                ..Default::default()
            },
            started: Instant::now(),
            request_bytes: Arc::new(AtomicU64::new(3)),
            guards: Vec::new(),
            downstream: Watch::default(),
            upgraded_response_bytes: None,
        }
    }

    #[tokio::test]
    async fn records_when_the_body_ends() {
        let m = Arc::new(RequestMetrics::default());
        let body = ObservedBody::new(super::super::body::full("hello"), finish(&m, 200));
        assert_eq!(count_of(&m.render(), &[]), 0);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "hello");
        let text = m.render();
        assert_eq!(
            count_of(&text, &[("response_code", "200"), ("reporter", "waypoint")]),
            1
        );
        assert!(text.contains("istio_response_bytes_sum{"));
        assert!(text.contains("le=\"5\"} 1"), "{text}");
        assert!(text.contains("istio_request_bytes_count{"));
        // Dropped before the end: counted once, flagged DC.
        drop(ObservedBody::new(
            super::super::body::full("x"),
            finish(&m, 503),
        ));
        assert_eq!(
            count_of(
                &m.render(),
                &[("response_code", "503"), ("response_flags", "DC")]
            ),
            1
        );
    }
}
