//! Tracing: the context written upstream (continued, decided once), the spans exported to
//! the collector over the transport (server span, one client span per attempt and mirror),
//! services without tracing leaving trace headers alone, and the other `Telemetry` settings
//! of a service: metric overrides.

use std::sync::Arc;
use std::time::Duration;

use api::otlp::collector::ExportTraceServiceRequest;
use api::otlp::trace::{Span, span::SpanKind};
use api::prost::Message;
use api::waypoint as pb;

use super::cfg::*;
use super::fake::{Behavior, Call, Fake};
use crate::engine::Engine;

const COLLECTOR: &str = "otel-collector.observability.svc.cluster.local";
const COLLECTOR_ADDR: &str = "10.0.7.1:4317";
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

fn traced(percentage: f64, mut route: pb::Route) -> pb::Waypoint {
    route.name = "traced".into();
    let mut service = reviews(vec![route]);
    service.telemetry = Some(pb::Telemetry {
        tracing: Some(pb::Tracing {
            provider: "otel".into(),
            random_sampling_percentage: percentage,
            custom_tags: vec![pb::CustomTag {
                tag: "team".into(),
                source: Some(pb::custom_tag::Source::Literal("books".into())),
            }],
            disable_span_reporting: false,
        }),
        ..Default::default()
    });
    let mut w = waypoint(vec![service], vec![reviews_policy(None)], vec![]);
    w.tracing_providers = vec![pb::TracingProvider {
        name: "otel".into(),
        service: COLLECTOR.into(),
        namespace: "observability".into(),
        port: 4317,
        ..Default::default()
    }];
    w
}

fn with_collector() -> Arc<Fake> {
    let f = Arc::new(
        Fake::new()
            .service(VIP, "shop", HOST)
            .endpoint(HOST, V1A, V1A_ADDR)
            .endpoint(HOST, V1B, V1B_ADDR)
            .endpoint(HOST, V2, V2_ADDR)
            .endpoint(
                COLLECTOR,
                "Kubernetes//Pod/observability/otel",
                COLLECTOR_ADDR,
            ),
    );
    f.set(COLLECTOR_ADDR, Behavior::GrpcOk);
    f
}

/// The spans the collector received once `n` have arrived (time is paused: the export
/// task's batch delay passes as soon as everything else waits).
async fn spans(fake: &Fake, n: usize) -> Vec<Span> {
    for _ in 0..100 {
        let got = exported(fake);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{} of {n} spans exported", exported(fake).len());
}

fn exported(fake: &Fake) -> Vec<Span> {
    fake.calls()
        .iter()
        .filter(|c| c.host.starts_with(COLLECTOR))
        .flat_map(|c: &Call| {
            assert_eq!(
                c.path,
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            );
            assert_eq!(c.headers["content-type"], "application/grpc");
            let len = u32::from_be_bytes(c.body[1..5].try_into().unwrap()) as usize;
            let req = ExportTraceServiceRequest::decode(&c.body[5..5 + len]).unwrap();
            let rs = &req.resource_spans[0];
            let service = &rs.resource.as_ref().unwrap().attributes[0];
            assert_eq!(service.key, "service.name");
            rs.scope_spans
                .iter()
                .flat_map(|s| s.spans.clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s str> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            api::otlp::common::any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn upstream_calls(fake: &Fake) -> Vec<Call> {
    fake.calls()
        .into_iter()
        .filter(|c| !c.host.starts_with(COLLECTOR))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_sampled_trace_is_continued_and_its_spans_exported() {
    let e: Arc<Engine> = engine(&traced(0.0, route("r", vec![], forward(&[("v1", 1)]))));
    const NODE: &str = "router~10.244.1.9~waypoint-1.shop~shop.svc.cluster.local";
    e.runtime.set_node_id(NODE);
    let f = with_collector();
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let headers = [("traceparent", tp.as_str()), ("user-agent", "curl/8.5")];
    let a = get(&e, &f, "/books", &headers).await;
    assert_eq!(a.status, 200);
    let sent = upstream_calls(&f).pop().unwrap();
    let out = sent.headers["traceparent"].to_str().unwrap().to_owned();
    assert!(
        out.starts_with(&format!("00-{TRACE}-")) && out.ends_with("-01"),
        "{out}"
    );
    assert!(!out.contains(PARENT));

    let spans = spans(&f, 2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(hex(&client.trace_id), TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(client.parent_span_id, server.span_id);
    // The upstream request names the client span as its parent.
    assert_eq!(&out[36..52], hex(&client.span_id));
    assert_eq!(server.name, format!("{HOST}:{PORT}/*"));
    assert_eq!(
        client.name,
        format!("router outbound|{PORT}|v1|{HOST} egress")
    );
    assert_eq!(attr(server, "http.method"), Some("GET"));
    assert_eq!(attr(server, "http.status_code"), Some("200"));
    assert_eq!(attr(server, "http.url"), Some("http://reviews:9080/books"));
    assert_eq!(attr(server, "team"), Some("books"));
    assert_eq!(attr(client, "team"), Some("books"));
    assert_eq!(attr(server, "node_id"), Some(NODE));
    assert_eq!(attr(server, "user_agent"), Some("curl/8.5"));
    assert_eq!(attr(server, "downstream_cluster"), Some("-"));
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    let text = e.runtime.render_metrics();
    assert!(
        text.contains("waypoint_trace_spans_total{result=\"exported\"} 2"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_callers_decision_holds_and_new_traces_follow_the_percentage() {
    let e = engine(&traced(100.0, route("r", vec![], forward(&[("v1", 1)]))));
    let f = with_collector();
    let tp = format!("00-{TRACE}-{PARENT}-00");
    get(&e, &f, "/", &[("traceparent", &tp)]).await;
    let out = upstream_calls(&f).pop().unwrap().headers["traceparent"].clone();
    assert!(out.to_str().unwrap().ends_with("-00"));
    // Without a context, 100 % samples a new trace; B3 comes back in its own form.
    get(&e, &f, "/", &[("b3", "1")]).await;
    let call = upstream_calls(&f).pop().unwrap();
    assert!(
        call.headers["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-01")
    );
    assert!(call.headers["b3"].to_str().unwrap().contains("-1-"));
    let spans = spans(&f, 2).await;
    assert_eq!(spans.len(), 2, "only the sampled request has spans");

    let zero = engine(&traced(0.0, route("r", vec![], forward(&[("v1", 1)]))));
    get(&zero, &f, "/", &[]).await;
    let call = upstream_calls(&f).pop().unwrap();
    assert!(
        call.headers["traceparent"]
            .to_str()
            .unwrap()
            .ends_with("-00")
    );
}

#[tokio::test(start_paused = true)]
async fn each_retry_and_mirror_has_its_client_span() {
    let mut f = forward(&[("v1", 1)]);
    f.retry = Some(pb::RetryPolicy {
        attempts: 2,
        retry_on: vec!["5xx".into()],
        ..Default::default()
    });
    f.mirrors = vec![pb::Mirror {
        destination: Some(dest(HOST, "v2")),
        percentage: 100.0,
    }];
    let e = engine(&traced(100.0, route("r", vec![], f)));
    let fake = with_collector();
    fake.set(V1A_ADDR, Behavior::Status(503));
    fake.set(V1B_ADDR, Behavior::Status(503));
    let a = get(&e, &fake, "/", &[]).await;
    assert_eq!(a.status, 503);
    // Three attempts, one mirror, one server span.
    let spans = spans(&fake, 5).await;
    assert_eq!(spans.len(), 5, "{spans:?}");
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    assert_eq!(attr(server, "error"), Some("true"));
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert!(clients.iter().all(|c| c.parent_span_id == server.span_id));
    let mut ids: Vec<_> = clients.iter().map(|c| c.span_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    let mirror = clients
        .iter()
        .find(|c| c.name == format!("router outbound|{PORT}|v2|{HOST} egress"))
        .expect("the mirror's span");
    assert_eq!(attr(mirror, "http.status_code"), Some("200"));
}

#[tokio::test(start_paused = true)]
async fn untraced_services_leave_trace_headers_alone() {
    let e = engine(&waypoint(
        vec![reviews(vec![route("r", vec![], forward(&[("v1", 1)]))])],
        vec![reviews_policy(None)],
        vec![],
    ));
    let f = with_collector();
    let tp = format!("00-{TRACE}-{PARENT}-01");
    get(
        &e,
        &f,
        "/",
        &[("traceparent", &tp), ("x-b3-traceid", "463ac35c9f6413ad")],
    )
    .await;
    let call = upstream_calls(&f).pop().unwrap();
    assert_eq!(call.headers["traceparent"], tp.as_str());
    assert_eq!(call.headers["x-b3-traceid"], "463ac35c9f6413ad");
    get(&e, &f, "/", &[]).await;
    assert!(
        !upstream_calls(&f)
            .pop()
            .unwrap()
            .headers
            .contains_key("traceparent")
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(exported(&f).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stuck_collector_costs_requests_nothing_and_is_counted() {
    let e = engine(&traced(100.0, route("r", vec![], forward(&[("v1", 1)]))));
    let f = with_collector();
    f.set(COLLECTOR_ADDR, Behavior::Hang);
    for _ in 0..3 {
        assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    }
    // The batch waits a second to fill, then its export gives up after five.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let text = e.runtime.render_metrics();
    assert!(
        text.contains("waypoint_trace_spans_total{result=\"failed\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("waypoint_trace_spans_total{result=\"exported\"} 0"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_http_provider_posts_the_protobuf_with_its_headers_under_its_deadline() {
    let mut w = traced(100.0, route("r", vec![], forward(&[("v1", 1)])));
    let provider = &mut w.tracing_providers[0];
    provider.http_path = "/v1/traces".into();
    provider.timeout_ms = 2000;
    provider.headers = [("x-api-key".to_string(), "k1".to_string())].into();
    let e = engine(&w);
    let f = with_collector();
    f.set(COLLECTOR_ADDR, Behavior::Status(200));
    assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    let posted = async {
        loop {
            let calls: Vec<Call> = f
                .calls()
                .into_iter()
                .filter(|c| c.host.starts_with(COLLECTOR))
                .collect();
            if let Some(call) = calls.into_iter().next() {
                return call;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let call = tokio::time::timeout(Duration::from_secs(30), posted)
        .await
        .expect("an export");
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/traces")
    );
    assert_eq!(call.headers["content-type"], "application/x-protobuf");
    assert_eq!(call.headers["x-api-key"], "k1");
    // The bare request: no gRPC frame header before it.
    let request = ExportTraceServiceRequest::decode(call.body.as_ref()).unwrap();
    let spans: Vec<&Span> = request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .collect();
    assert_eq!(spans.len(), 2, "{spans:?}");

    // A collector that does not answer fails the export after the provider's 2 s, not 5 s.
    f.set(COLLECTOR_ADDR, Behavior::Hang);
    assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let text = e.runtime.render_metrics();
    assert!(
        text.contains("waypoint_trace_spans_total{result=\"failed\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn metric_overrides_relabel_and_disable_request_metrics() {
    let mut service = reviews(vec![route("r", vec![], forward(&[("v1", 1)]))]);
    service.telemetry = Some(pb::Telemetry {
        metric_overrides: vec![
            pb::MetricOverride {
                metric: "REQUEST_COUNT".into(),
                remove_tags: vec!["request_protocol".into()],
                upsert_tags: vec![pb::Header {
                    name: "team".into(),
                    value: "books".into(),
                }],
                ..Default::default()
            },
            pb::MetricOverride {
                metric: "REQUEST_SIZE".into(),
                disabled: true,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let e = engine(&waypoint(vec![service], vec![reviews_policy(None)], vec![]));
    let f = with_collector();
    assert_eq!(get(&e, &f, "/", &[]).await.status, 200);
    let text = e.runtime.render_metrics();
    let count = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .expect("a request count");
    assert!(count.contains(",team=\"books\"}"), "{count}");
    assert!(!count.contains("request_protocol"), "{count}");
    let duration = text
        .lines()
        .find(|l| l.starts_with("istio_request_duration_milliseconds_count{"))
        .expect("a duration");
    assert!(duration.contains("request_protocol=\"http\""), "{duration}");
    assert!(!duration.contains("team="), "{duration}");
    assert!(
        !text.contains("istio_request_bytes_count{"),
        "request sizes are disabled"
    );
    assert!(text.contains("istio_response_bytes_count{"));
}
