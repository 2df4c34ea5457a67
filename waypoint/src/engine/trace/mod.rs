//! Distributed tracing at the waypoint: the trace context requests carry ([`context`]: W3C
//! and B3, in and out), the settings of each traced service ([`spec`]), the spans of one
//! request ([`RequestTrace`]: the server span of the request received, a client span per
//! upstream attempt and per mirror), and their export to an OTLP/gRPC collector over the
//! mesh ([`export`]: a bounded queue, batches, drops counted, never blocking a request).
//!
//! A service without tracing settings leaves the trace headers as they came (Envoy without
//! a tracer does the same); a traced service continues the caller's trace, or starts one,
//! and respects a decision the caller made, so a trace is sampled whole or not at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderValue};

mod context;
mod export;
mod ids;
mod span;
mod spec;

pub(crate) use context::{Continued, Incoming};
pub(crate) use export::Tracer;
pub(crate) use ids::{hex_into, random_id};
pub(crate) use span::{Attributes, SpanKind, SpanParts};
pub(crate) use spec::{Provider, Providers, TagValue, TracingSpec, providers};

/// An upstream exchange of a traced request: an attempt or a mirror.
#[derive(Debug, Clone)]
pub(crate) struct ClientSpan {
    /// Its span id (the `traceparent` parent its request carried).
    pub span_id: [u8; 8],
    /// Envoy's upstream cluster name (`outbound|PORT|SUBSET|HOST`).
    pub cluster: String,
    /// The endpoint it went to.
    pub upstream: Option<SocketAddr>,
    /// When it was sent.
    pub started: SystemTime,
    /// When it ended; `None` while it is the request's answer (it ends with the response).
    pub ended: Option<SystemTime>,
    /// The status it got (0: none).
    pub status: u16,
    /// Why it failed without a response.
    pub error: Option<&'static str>,
}

/// The trace of one request to a traced service.
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace {
    /// The context this hop continues.
    pub context: Continued,
    /// The service's settings.
    pub spec: Arc<TracingSpec>,
    /// `service.name` of the spans' resource: `<waypoint>.<namespace>`, as Istio names its
    /// proxies.
    pub resource: Arc<str>,
    /// Arrival.
    pub started: SystemTime,
    /// The request's upstream attempts, in order.
    pub attempts: Vec<ClientSpan>,
    /// The custom tags' values for this request.
    pub tags: Attributes,
    /// The server span's name: Istio's `<service hostname>:<port>/*`.
    pub name: String,
    /// The request's `user-agent`, kept when the trace records.
    pub user_agent: Option<HeaderValue>,
    /// The waypoint's node id, when known.
    pub node_id: Option<Arc<str>>,
}

impl RequestTrace {
    /// Starts the trace of a request that arrived with `incoming`.
    pub(crate) fn start(
        incoming: &Incoming,
        spec: Arc<TracingSpec>,
        resource: Arc<str>,
        name: String,
        headers: &HeaderMap,
    ) -> Self {
        let context = Continued::from(incoming, spec.percentage);
        // Nothing allocated for a trace that records no span.
        let mut tags = Attributes::default();
        if context.sampled && spec.report {
            tags = Attributes::new(spec.provider.max_tag_length);
            for (tag, value) in &spec.tags {
                let v = match value {
                    TagValue::Fixed(v) => v.as_str(),
                    TagValue::Header(name, default) => headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(default),
                };
                if !v.is_empty() {
                    tags.add(tag, v);
                }
            }
        }
        let user_agent = (context.sampled && spec.report)
            .then(|| headers.get(http::header::USER_AGENT).cloned())
            .flatten();
        Self {
            context,
            spec,
            resource,
            started: SystemTime::now(),
            attempts: Vec::new(),
            tags,
            name,
            user_agent,
            node_id: None,
        }
    }

    /// Whether its spans are recorded and exported.
    pub(crate) fn records(&self) -> bool {
        self.context.sampled && self.spec.report
    }

    /// A new upstream attempt to `upstream` in `cluster`: its context is written into
    /// `headers`; its span is kept when the trace records.
    pub(crate) fn attempt(
        &mut self,
        headers: &mut http::HeaderMap,
        cluster: impl FnOnce() -> String,
        upstream: SocketAddr,
    ) {
        let span_id = random_id();
        self.context.write(headers, span_id);
        if self.records() {
            self.attempts.push(ClientSpan {
                span_id,
                cluster: cluster(),
                upstream: Some(upstream),
                started: SystemTime::now(),
                ended: None,
                status: 0,
                error: None,
            });
        }
    }

    /// Ends the last attempt with `status` (0: none) or `error`.
    pub(crate) fn attempt_ended(&mut self, status: u16, error: Option<&'static str>, done: bool) {
        if let Some(a) = self.attempts.last_mut() {
            a.status = status;
            a.error = error;
            if done {
                a.ended = Some(SystemTime::now());
            }
        }
    }
}

impl RequestTrace {
    /// The spans of the finished request: its server span (ending at `end`, with
    /// `attributes` beside the custom tags) and a client span per attempt.
    pub(crate) fn spans(
        &self,
        end: SystemTime,
        error: bool,
        mut attributes: Attributes,
    ) -> Vec<Vec<u8>> {
        let c = &self.context;
        let max = self.spec.provider.max_tag_length;
        let mut out = Vec::with_capacity(1 + self.attempts.len());
        for a in &self.attempts {
            out.push(client_span(c, a, a.ended.unwrap_or(end), max, &self.tags));
        }
        attributes.extend(&self.tags);
        out.push(
            SpanParts {
                trace_id: c.trace_id,
                span_id: c.span_id,
                parent: c.parent,
                sampled: c.sampled,
                name: self.name.clone(),
                kind: SpanKind::Server,
                start: self.started,
                end,
                error,
                attributes,
            }
            .encode(),
        );
        out
    }

    /// What a mirror of the request needs to join its trace.
    pub(crate) fn mirror(&self) -> MirrorTrace {
        MirrorTrace {
            context: self.context.clone(),
            provider: self.records().then(|| self.spec.provider.clone()),
            resource: self.resource.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// The trace a mirrored copy belongs to: its request's context, and where its span goes.
pub(crate) struct MirrorTrace {
    /// The context of the request it copies.
    pub context: Continued,
    /// The collector, when the trace records.
    pub provider: Option<Arc<Provider>>,
    /// The spans' resource.
    pub resource: Arc<str>,
    /// The custom tags' values.
    pub tags: Attributes,
}

/// The span of an upstream exchange of a traced request.
pub(crate) fn client_span(
    context: &Continued,
    c: &ClientSpan,
    end: SystemTime,
    max_len: usize,
    tags: &Attributes,
) -> Vec<u8> {
    let mut attributes = Attributes::new(max_len);
    attributes.add("component", "proxy");
    attributes.add("upstream_cluster", &c.cluster);
    attributes.add("upstream_cluster.name", &c.cluster);
    if let Some(address) = c.upstream {
        attributes.add_display("upstream_address", address);
    }
    if c.status != 0 {
        attributes.add_display("http.status_code", c.status);
    }
    if let Some(why) = c.error {
        attributes.add("error.message", why);
    }
    let error = c.error.is_some() || c.status >= 500;
    if error {
        attributes.add("error", "true");
    }
    attributes.extend(tags);
    SpanParts {
        trace_id: context.trace_id,
        span_id: c.span_id,
        parent: Some(context.span_id),
        sampled: context.sampled,
        // Envoy's name for the span of an upstream request.
        name: format!("router {} egress", c.cluster),
        kind: SpanKind::Client,
        start: c.started,
        end,
        error,
        attributes,
    }
    .encode()
}

/// Envoy's name for the upstream cluster of `hostname`, `port` and `subset`.
pub(crate) fn cluster_name(port: u16, subset: Option<&str>, hostname: &str) -> String {
    format!("outbound|{port}|{}|{hostname}", subset.unwrap_or(""))
}
