//! The receiver over real sockets: a tonic OTLP client for gRPC, the app's own HTTP client for
//! OTLP/HTTP and the listing.

use std::net::SocketAddr;

use api::otlp::collector::trace_service_client::TraceServiceClient;
use api::otlp::common::{AnyValue, KeyValue, any_value};
use api::otlp::resource::Resource;
use api::otlp::trace::{ResourceSpans, ScopeSpans, Span, span};
use tokio::sync::oneshot;

use super::*;
use crate::app::client::{Reply, RequestTemplate, Target, fetch};

struct Receiver {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(settings: ReceiverSettings) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, settings, async {
        let _ = stopped.await;
    }));
    Receiver { addr, _stop: stop }
}

fn settings() -> ReceiverSettings {
    ReceiverSettings {
        max_spans: 100,
        delay: Duration::ZERO,
        fail_rate: 0.0,
        print_spans: false,
    }
}

/// A batch from `service` of spans `names` in one trace, each the child of the one before.
fn batch(service: &str, trace: u8, names: &[&str]) -> ExportTraceServiceRequest {
    let spans = names
        .iter()
        .zip(1u8..)
        .map(|(name, id)| Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if id == 1 { Vec::new() } else { vec![id - 1; 8] },
            name: name.to_string(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_000 * u64::from(id),
            end_time_unix_nano: 1_000 * u64::from(id) + 500,
            attributes: vec![KeyValue {
                key: "http.method".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("GET".into())),
                }),
            }],
            ..Span::default()
        })
        .collect();
    let service_name = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(service.into())),
        }),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![service_name],
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

async fn grpc_client(addr: SocketAddr) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn request(addr: SocketAddr, method: Method, path: &str, http2: bool) -> Reply {
    send(addr, method, path, &[], Bytes::new(), http2).await
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&'static str, &'static str)],
    body: Bytes,
    http2: bool,
) -> Reply {
    let mut template = RequestTemplate {
        target: Target::parse(&format!("http://{addr}{path}")).unwrap(),
        method,
        headers: http::HeaderMap::new(),
        body,
        http2,
    };
    for (name, value) in headers {
        template
            .headers
            .insert(*name, HeaderValue::from_static(value));
    }
    fetch(&template, 5000, 1 << 20).await.unwrap()
}

async fn held(addr: SocketAddr) -> Vec<ReceivedSpan> {
    let reply = request(addr, Method::GET, SPANS_PATH, false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[CONTENT_TYPE], "application/json");
    serde_json::from_slice(&reply.body).unwrap()
}

async fn stats(addr: SocketAddr) -> ReceiverStats {
    let reply = request(addr, Method::GET, STATS_PATH, false).await;
    serde_json::from_slice(&reply.body).unwrap()
}

async fn post_protobuf(addr: SocketAddr, body: Vec<u8>, http2: bool) -> Reply {
    let headers = [("content-type", PROTOBUF)];
    send(
        addr,
        Method::POST,
        HTTP_TRACES_PATH,
        &headers,
        Bytes::from(body),
        http2,
    )
    .await
}

#[tokio::test]
async fn grpc_exports_are_listed_at_spans_exactly() {
    let receiver = start(settings()).await;
    let mut client = grpc_client(receiver.addr).await;
    let reply = client
        .export(batch("frontend", 0xa1, &["ingress", "orders"]))
        .await
        .unwrap();
    assert_eq!(reply.into_inner(), ExportTraceServiceResponse::default());
    client
        .export(batch("payments", 0xb2, &["charge"]))
        .await
        .unwrap();

    let spans = held(receiver.addr).await;
    let expected: Vec<ReceivedSpan> = [
        spans::flatten(&batch("frontend", 0xa1, &["ingress", "orders"])),
        spans::flatten(&batch("payments", 0xb2, &["charge"])),
    ]
    .concat();
    assert_eq!(spans, expected);
    let orders = &spans[1];
    assert_eq!(orders.trace_id, "a1".repeat(16));
    assert_eq!(orders.span_id, "0202020202020202");
    assert_eq!(orders.parent_span_id, "0101010101010101");
    assert_eq!(orders.kind, "SPAN_KIND_SERVER");
    assert_eq!(orders.service_name, "frontend");
    assert_eq!(orders.attributes["http.method"], "GET");
    assert_eq!(
        (orders.start_time_unix_nano, orders.end_time_unix_nano),
        (2_000, 2_500)
    );
    let expected_stats = ReceiverStats {
        batches_received: 2,
        spans_received: 3,
        spans_held: 3,
        ..ReceiverStats::default()
    };
    assert_eq!(stats(receiver.addr).await, expected_stats);
}

#[test]
fn a_printed_line_names_trace_span_parent_name_and_service() {
    let spans = spans::flatten(&batch("orders", 0xc3, &["root", "GET /pay"]));
    let lines: Vec<String> = spans.iter().map(span_line).collect();
    let trace = "c3".repeat(16);
    assert_eq!(
        lines,
        [
            format!("trace={trace} span=0101010101010101 parent=- name=\"root\" service=orders"),
            format!(
                "trace={trace} span=0202020202020202 parent=0101010101010101 name=\"GET /pay\" service=orders"
            ),
        ]
    );
}

#[tokio::test]
async fn http_protobuf_exports_over_http1_and_h2c_and_json_is_refused() {
    let receiver = start(settings()).await;
    let body = batch("orders", 7, &["a"]).encode_to_vec();
    let reply = post_protobuf(receiver.addr, body.clone(), false).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[CONTENT_TYPE], PROTOBUF);
    assert_eq!(
        ExportTraceServiceResponse::decode(reply.body).unwrap(),
        ExportTraceServiceResponse::default()
    );
    let reply = post_protobuf(
        receiver.addr,
        batch("orders", 8, &["b"]).encode_to_vec(),
        true,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let json_headers = [("content-type", "application/json")];
    let reply = send(
        receiver.addr,
        Method::POST,
        HTTP_TRACES_PATH,
        &json_headers,
        Bytes::from_static(b"{}"),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let reply = post_protobuf(receiver.addr, b"\xff\xff".to_vec(), false).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let names: Vec<String> = held(receiver.addr)
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let counted = stats(receiver.addr).await;
    assert_eq!(
        (counted.batches_received, counted.http_batches_received),
        (2, 2)
    );
}

#[tokio::test]
async fn spans_past_the_cap_are_dropped_and_counted() {
    let receiver = start(ReceiverSettings {
        max_spans: 2,
        ..settings()
    })
    .await;
    let mut client = grpc_client(receiver.addr).await;
    client
        .export(batch("a", 1, &["1", "2", "3"]))
        .await
        .unwrap();
    client.export(batch("a", 2, &["4"])).await.unwrap();
    let names: Vec<String> = held(receiver.addr)
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["1", "2"]);
    let expected = ReceiverStats {
        batches_received: 2,
        spans_received: 4,
        spans_dropped: 2,
        spans_held: 2,
        batches_refused: 0,
        http_batches_received: 0,
    };
    assert_eq!(stats(receiver.addr).await, expected);

    let reply = request(receiver.addr, Method::DELETE, SPANS_PATH, false).await;
    let cleared: ReceiverStats = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        cleared,
        ReceiverStats {
            spans_held: 0,
            ..expected
        }
    );
    client.export(batch("a", 3, &["5"])).await.unwrap();
    let names: Vec<String> = held(receiver.addr)
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["5"]);
}

#[tokio::test]
async fn fail_rate_refuses_every_other_export_as_unavailable() {
    let receiver = start(ReceiverSettings {
        fail_rate: 0.5,
        ..settings()
    })
    .await;
    let mut client = grpc_client(receiver.addr).await;
    client.export(batch("a", 1, &["kept"])).await.unwrap();
    let refused = client
        .export(batch("a", 2, &["refused"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(refused.message(), "refused by --fail-rate");
    let reply = post_protobuf(
        receiver.addr,
        batch("a", 3, &["kept"]).encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = post_protobuf(
        receiver.addr,
        batch("a", 4, &["refused"]).encode_to_vec(),
        false,
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

    let names: Vec<String> = held(receiver.addr)
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["kept", "kept"]);
    let counters = stats(receiver.addr).await;
    assert_eq!(
        (counters.batches_received, counters.batches_refused),
        (2, 2)
    );
}

#[tokio::test]
async fn a_delayed_export_outlasts_a_short_client_deadline() {
    // The delay outlasts the client's deadline by far, so the outcome does not depend on timing.
    let receiver = start(ReceiverSettings {
        delay: Duration::from_secs(600),
        ..settings()
    })
    .await;
    let mut client = grpc_client(receiver.addr).await;
    let mut export = tonic::Request::new(batch("a", 1, &["late"]));
    export.set_timeout(Duration::from_millis(200));
    let status = client.export(export).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert_eq!(stats(receiver.addr).await, ReceiverStats::default());
}

#[tokio::test]
async fn other_grpc_methods_are_unimplemented_and_other_paths_not_found() {
    let receiver = start(settings()).await;
    let headers = [("content-type", "application/grpc")];
    let reply = send(
        receiver.addr,
        Method::POST,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        &headers,
        Bytes::from_static(&[0, 0, 0, 0, 0]),
        true,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["grpc-status"], "12");
    assert_eq!(
        request(receiver.addr, Method::GET, "/v1/metrics", false)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        request(receiver.addr, Method::PUT, SPANS_PATH, false)
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}
