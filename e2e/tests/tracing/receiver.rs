//! The OTLP receiver on the sandbox: a `meshctl app otlp-receiver` pod in an ambient namespace
//! takes a batch of spans exported with a real OTLP/gRPC client from a pod in the mesh (through
//! the ztunnels, over HBONE) and one from a pod outside it (plaintext to the captured pod), and
//! lists exactly those spans at `GET /spans`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use api::otlp::collector::trace_service_client::TraceServiceClient;
use api::otlp::collector::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use api::otlp::common::{AnyValue, KeyValue, any_value};
use api::otlp::resource::Resource;
use api::otlp::trace::{ResourceSpans, ScopeSpans, Span, span};
use e2e::manifests::{idle_pod, otlp_receiver_pod, service_account};
use e2e::mesh::{in_netns, wait_namespace_captured, wait_ready, ztunnel_metrics};
use e2e::metrics::metric_sum;
use e2e::traces::{ReceivedSpan, ReceiverStats, receiver_stats, wait_for_spans};
use e2e::{SETTLE, Sandbox, eventually};
use test_support::manifests::namespace;

/// The receiver's namespace, in the mesh.
const NS: &str = "observability";
/// OTLP's gRPC port.
const OTLP_PORT: u16 = 4317;

/// One span of a test batch: `(span id byte, parent span id byte or 0 for a root, name)`.
type SpanSpec = (u8, u8, &'static str);

fn string_value(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
    }
}

/// An export request from `service`: the spans of one trace, every id byte repeated.
fn batch(service: &str, trace: u8, spans: &[SpanSpec]) -> ExportTraceServiceRequest {
    let spans = spans
        .iter()
        .map(|&(id, parent, name)| Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if parent == 0 {
                Vec::new()
            } else {
                vec![parent; 8]
            },
            name: name.into(),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: 1_765_000_000_000_000_000 + u64::from(id),
            end_time_unix_nano: 1_765_000_000_000_001_000 + u64::from(id),
            attributes: vec![string_value("upstream_cluster", name)],
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_value("service.name", service)],
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

/// What `GET /spans` must list for `batch(service, trace, spans)`, written out independently.
fn expected(service: &str, trace: u8, spans: &[SpanSpec]) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .map(|&(id, parent, name)| ReceivedSpan {
            trace_id: format!("{trace:02x}").repeat(16),
            span_id: format!("{id:02x}").repeat(8),
            parent_span_id: if parent == 0 {
                String::new()
            } else {
                format!("{parent:02x}").repeat(8)
            },
            name: name.into(),
            kind: "SPAN_KIND_CLIENT".into(),
            start_time_unix_nano: 1_765_000_000_000_000_000 + u64::from(id),
            end_time_unix_nano: 1_765_000_000_000_001_000 + u64::from(id),
            attributes: BTreeMap::from([("upstream_cluster".into(), name.into())]),
            status: "STATUS_CODE_UNSET".into(),
            service_name: service.into(),
        })
        .collect()
}

/// Exports `batch` to `receiver` with tonic's OTLP client, from inside pod `pod`'s network
/// namespace (the connection is the pod's, captured by its ztunnel when the pod is in the mesh).
fn export_from(
    sb: &Sandbox,
    pod: &str,
    receiver: SocketAddr,
    batch: ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    let netns = sb.netns_path(pod);
    in_netns(&netns, || {
        // A runtime on this thread only: every socket it opens is the pod's.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            let mut client = TraceServiceClient::connect(format!("http://{receiver}"))
                .await
                .unwrap_or_else(|e| panic!("connecting to {receiver} from {pod}: {e}"));
            client
                .export(batch)
                .await
                .unwrap_or_else(|e| panic!("exporting to {receiver} from {pod}: {e}"))
                .into_inner()
        })
    })
    .unwrap_or_else(|e| panic!("entering {}: {e}", netns.display()))
}

#[test]
fn spans_exported_from_a_mesh_pod_and_a_plain_pod_are_listed_exactly() {
    let manifests = namespace(NS, true)
        + &service_account(NS, "client")
        + &otlp_receiver_pod(NS, "otel-collector", "node1", OTLP_PORT)
        + &idle_pod(NS, "mesh-client", "node2", "client")
        + &service_account("default", "client")
        + &idle_pod("default", "plain-client", "node2", "client");
    let sb = Sandbox::up(&manifests).expect("sandbox up");
    wait_ready(&sb);
    wait_namespace_captured(&sb, NS);

    let receiver = SocketAddr::from((sb.pod_ip("otel-collector").expect("pod IP"), OTLP_PORT));
    let from_mesh: [SpanSpec; 2] = [(1, 0, "ingress"), (2, 1, "orders.shop.svc.cluster.local")];
    let from_plain: [SpanSpec; 1] = [(7, 3, "payments.shop.svc.cluster.local")];
    let reply = export_from(
        &sb,
        &format!("{NS}.mesh-client"),
        receiver,
        batch("waypoint.shop", 0xa1, &from_mesh),
    );
    assert_eq!(reply, ExportTraceServiceResponse::default());
    export_from(
        &sb,
        "default.plain-client",
        receiver,
        batch("frontend.shop", 0xb2, &from_plain),
    );

    // The mesh pod's export reached the receiver's ztunnel over mutual TLS (HBONE). Its inbound
    // plaintext side keeps no count, so the plain pod's path shows only in the spans below.
    let opened_mtls = || {
        ztunnel_metrics(&sb, "node1").map_or(-1.0, |text| {
            let labels = [
                ("reporter", "destination"),
                ("connection_security_policy", "mutual_tls"),
            ];
            metric_sum(&text, "istio_tcp_connections_opened_total", &labels)
        })
    };
    assert!(
        eventually(SETTLE, || opened_mtls() == 1.0),
        "mutual TLS connections opened at node1: {}",
        opened_mtls()
    );

    let url = format!("http://{receiver}");
    let reader = format!("{NS}/mesh-client");
    let spans = wait_for_spans(&sb, &reader, &url, 3, SETTLE).expect("spans at the receiver");
    let want = [
        expected("waypoint.shop", 0xa1, &from_mesh),
        expected("frontend.shop", 0xb2, &from_plain),
    ]
    .concat();
    assert_eq!(spans, want);
    let stats = receiver_stats(&sb, &reader, &url).expect("receiver stats");
    let want_stats = ReceiverStats {
        batches_received: 2,
        spans_received: 3,
        spans_dropped: 0,
        spans_held: 3,
        batches_refused: 0,
        // Both came over OTLP/gRPC.
        http_batches_received: 0,
    };
    assert_eq!(stats, want_stats);
}
