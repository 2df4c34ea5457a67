//! The spans of a finished traced request, with the attributes Envoy gives its spans
//! (`http.method`, `http.url`, `http.status_code`, `response_flags`, `guid:x-request-id`,
//! `node_id`, `user_agent`, `downstream_cluster`, ...) and Istio's workload tags
//! (`istio.canonical_service`, `istio.namespace`, ...).

use super::super::trace::{Attributes, Tracer};
use super::record::RequestRecord;

/// Queues the spans of `r` for export, when its trace records.
pub(crate) fn export(tracer: &Tracer, r: &RequestRecord) {
    let Some(trace) = r.trace.as_deref().filter(|t| t.records()) else {
        return;
    };
    let code = r.labels.response_code;
    let error = code == 0 || code >= 500;
    let mut attributes = server_attributes(r, trace.spec.provider.max_tag_length, error);
    if let Some(node_id) = &trace.node_id {
        attributes.add("node_id", node_id);
    }
    let user_agent = trace.user_agent.as_ref().and_then(|v| v.to_str().ok());
    attributes.add("user_agent", user_agent.unwrap_or("-"));
    // The measured duration, so the span agrees with the metrics and the access log.
    let end = trace.started + r.duration;
    for span in trace.spans(end, error, attributes) {
        tracer.submit(&trace.spec.provider, &trace.resource, span);
    }
}

fn server_attributes(r: &RequestRecord, max: usize, error: bool) -> Attributes {
    let l = &r.labels;
    let path = r.path.as_ref().map_or("/", |p| p.as_str());
    let flags = if l.response_flags.is_empty() {
        "-"
    } else {
        &l.response_flags
    };
    let namespace = if l.destination.namespace.is_empty() {
        &l.service.namespace
    } else {
        &l.destination.namespace
    };
    let request_id = r
        .request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut out = Attributes::new(max);
    for (key, value) in [
        ("component", "proxy"),
        // Envoy's value when the caller names no cluster (x-envoy-downstream-service-cluster).
        ("downstream_cluster", "-"),
        ("http.method", r.method.as_str()),
        ("http.protocol", l.request_protocol),
        ("response_flags", flags),
        ("guid:x-request-id", request_id),
        ("istio.canonical_service", &l.destination.app),
        ("istio.canonical_revision", &l.destination.version),
        ("istio.namespace", namespace),
        ("istio.cluster_id", &l.destination.cluster),
        ("destination.service", &l.service.hostname),
    ] {
        if !value.is_empty() {
            out.add(key, value);
        }
    }
    out.add_display(
        "http.url",
        format_args!("http://{}{path}", r.authority.as_str()),
    );
    out.add_display("http.status_code", l.response_code);
    out.add_display("request_size", r.request_bytes);
    out.add_display("response_size", r.response_bytes);
    if let Some(peer) = r.source {
        out.add_display("peer.address", peer);
    }
    if !l.grpc_response_status.is_empty() {
        out.add("grpc.status_code", &l.grpc_response_status);
    }
    if error {
        out.add("error", "true");
    }
    out
}
