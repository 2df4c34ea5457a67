//! Istio's mesh config and Telemetry applied to a live sandbox with `meshctl apply`, as users
//! write them for Istio: the controller serves the waypoint the tracing provider and each
//! service's resolved telemetry.

use std::time::Duration;

use e2e::{Sandbox, eventually};
use serde_json::{Value, json};

/// Upper bound for the controller to serve a change; generous, as the machine may be busy.
const SETTLE: Duration = Duration::from_secs(30);

/// Namespace `trace` with a waypoint serving Service orders, and the collector's Service.
const MESH: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: trace
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: v1
kind: Namespace
metadata: {name: observability}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: trace}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: trace}
spec: {selector: {app: orders}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: otel-collector, namespace: observability}
spec: {selector: {app: otel-collector}, ports: [{name: grpc-otlp, port: 4317}]}
";

/// What a user writes: the mesh config with an OpenTelemetry provider, and a mesh-wide
/// Telemetry tracing 10 % of requests to it.
const TRACING: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel-collector.observability.svc.cluster.local
        port: 4317
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10.0
";

/// The waypoint's configuration as the controller serves it.
fn waypoint(sb: &Sandbox) -> Value {
    let dump = sb.config_dump().unwrap_or_default();
    dump["type.googleapis.com/mesh.waypoint.v1.Waypoint"]["trace/waypoint"]["resource"].clone()
}

#[test]
fn applied_mesh_config_and_telemetry_reach_the_waypoint_configuration() {
    let sb = Sandbox::up(MESH).expect("sandbox up");
    sb.apply(TRACING)
        .expect("applied without findings that fail it");
    let provider = json!([{"name": "otel", "namespace": "observability", "port": 4317,
                           "service": "otel-collector.observability.svc.cluster.local"}]);
    let served = || {
        let w = waypoint(&sb);
        w["tracingProviders"] == provider
            && w["services"][0]["telemetry"]["tracing"]["randomSamplingPercentage"] == 10.0
    };
    assert!(eventually(SETTLE, served), "{:#}", waypoint(&sb));
    let telemetry = &waypoint(&sb)["services"][0]["telemetry"];
    assert_eq!(
        *telemetry,
        json!({"tracing": {"provider": "otel", "randomSamplingPercentage": 10.0},
               "sources": ["Telemetry istio-system/mesh-default"]})
    );
    // Deleted, the Telemetry leaves the mesh config alone, which names no default provider.
    sb.delete(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: mesh-default, namespace: istio-system}\n",
    )
    .expect("deleted");
    let untraced = || {
        let w = waypoint(&sb);
        w["services"][0].is_object() && w["services"][0].get("telemetry").is_none()
    };
    assert!(eventually(SETTLE, untraced), "{:#}", waypoint(&sb));
}
