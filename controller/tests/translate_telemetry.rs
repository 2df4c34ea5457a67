//! Istio's Telemetry API and the mesh config's extension providers → each waypoint's tracing
//! providers and the telemetry of the services it serves: scopes and inheritance, providers
//! that are not declared or not OpenTelemetry, metric overrides, and everything that is not
//! acted on reported as a finding.

#[path = "translate_common.rs"]
mod common;
#[path = "translate_routes_common.rs"]
mod routes;

use api::waypoint::{
    ConfigSource, CustomTag, Header, MetricOverride, Telemetry, Tracing, TracingProvider,
    ValueFrom, custom_tag,
};
use common::*;
use controller::model::Problem;
use controller::translate::{TranslateOptions, Translation, Translator, translate};
use routes::*;

/// Namespaces `shop` (waypoint `waypoint`; Services orders and payments), `lab` (no waypoint;
/// Service plain) and `obs` (the collector), and the root namespace.
const MESH: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: v1
kind: Namespace
metadata: {name: lab, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: obs}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: orders}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: shop}
spec: {clusterIP: 10.96.0.11, selector: {app: payments}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: lab}
spec: {clusterIP: 10.96.0.12, selector: {app: plain}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: otel-collector, namespace: obs}
spec: {clusterIP: 10.96.0.13, selector: {app: otel}, ports: [{name: grpc-otlp, port: 4317}]}
";

/// The mesh config as users write it for Istio: an OpenTelemetry provider, a Zipkin one
/// (not supported), the default tracing provider and sampling.
const MESH_CONFIG: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel-collector.obs.svc.cluster.local
        port: 4317
        maxTagLength: 128
    - name: zipkin
      zipkin:
        service: zipkin.obs.svc.cluster.local
        port: 9411
    defaultProviders:
      tracing: [otel]
    defaultConfig:
      tracing:
        sampling: 2.5
";

/// The OTLP provider [`MESH_CONFIG`] declares.
fn otel() -> TracingProvider {
    TracingProvider {
        name: "otel".into(),
        service: "otel-collector.obs.svc.cluster.local".into(),
        namespace: "obs".into(),
        port: 4317,
        max_tag_length: 128,
        ..TracingProvider::default()
    }
}

fn run_with(extra: &[&str]) -> Translation {
    let yaml = [MESH].iter().chain(extra).copied().collect::<Vec<_>>();
    translate(
        &index_from("mesh.yaml", &yaml.join("---\n")),
        &TranslateOptions::default(),
    )
}

/// The telemetry of Service `name` of the shop waypoint.
fn telemetry_of(t: &Translation, name: &str) -> Option<Telemetry> {
    served(&shop(t), name).telemetry
}

fn tracing_of(t: &Translation, name: &str) -> Option<Tracing> {
    telemetry_of(t, name).and_then(|t| t.tracing)
}

fn source(namespace: &str, name: &str) -> ConfigSource {
    ConfigSource {
        kind: "Telemetry".into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// `(object, field, warning?)` of every problem about `kind`.
fn findings(t: &Translation, kind: &str) -> Vec<(String, String, bool)> {
    t.problems
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| {
            (
                format!("{}/{}", p.namespace, p.name),
                p.field.clone(),
                p.is_warning(),
            )
        })
        .collect()
}

fn problem<'a>(t: &'a Translation, name: &str, field: &str) -> &'a Problem {
    t.problems
        .iter()
        .find(|p| p.name == name && p.field == field)
        .unwrap_or_else(|| panic!("no problem at {name} {field}: {:?}", t.problems))
}

fn literal(tag: &str, value: &str) -> CustomTag {
    CustomTag {
        tag: tag.into(),
        source: Some(custom_tag::Source::Literal(value.into())),
    }
}

#[test]
fn without_mesh_config_or_telemetry_nothing_is_configured() {
    let t = run_with(&[]);
    let w = shop(&t);
    assert_eq!(names(&w), ["orders", "payments"]);
    assert!(w.services.iter().all(|s| s.telemetry.is_none()));
    assert!(w.tracing_providers.is_empty());
    assert!(t.problems.is_empty(), "{:?}", t.problems);
}

#[test]
fn the_mesh_default_provider_traces_every_service_at_the_mesh_sampling() {
    let t = run_with(&[MESH_CONFIG]);
    let want = Tracing {
        provider: "otel".into(),
        random_sampling_percentage: 2.5,
        ..Tracing::default()
    };
    assert_eq!(tracing_of(&t, "orders"), Some(want.clone()));
    assert_eq!(
        telemetry_of(&t, "payments"),
        Some(Telemetry {
            tracing: Some(want),
            ..Telemetry::default()
        })
    );
    assert_eq!(shop(&t).tracing_providers, [otel()]);
    // Only the Zipkin provider is a finding, on the ConfigMap, naming it.
    assert_eq!(
        findings(&t, "ConfigMap"),
        [(
            "istio-system/istio".to_string(),
            "data.mesh.extensionProviders[1]".to_string(),
            true
        )]
    );
    let zipkin = problem(&t, "istio", "data.mesh.extensionProviders[1]");
    assert!(
        zipkin
            .message
            .contains("provider kind zipkin is not supported"),
        "{zipkin}"
    );
}

/// Mesh-wide, namespace, Gateway-targeted and Service-targeted Telemetry, each setting part.
const SCOPES: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10.0
    customTags:
      env: {literal: {value: prod}}
      team: {literal: {value: core}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {request_protocol: {operation: REMOVE}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  tracing:
  - randomSamplingPercentage: 50.0
    customTags:
      user: {header: {name: x-user, defaultValue: anonymous}}
  accessLogging:
  - disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: at-waypoint, namespace: shop}
spec:
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}
  tracing:
  - disableSpanReporting: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: orders, namespace: shop}
spec:
  targetRefs:
  - {kind: Service, name: orders}
  tracing:
  - randomSamplingPercentage: 100.0
    customTags:
      env: {environment: {name: POD_NAMESPACE}}
  accessLogging:
  - disabled: false
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      tagOverrides: {track: {value: \"'canary'\"}}
";

#[test]
fn a_more_specific_telemetry_overrides_what_it_sets_and_inherits_the_rest() {
    let t = run_with(&[MESH_CONFIG, SCOPES]);
    assert!(
        findings(&t, "Telemetry").is_empty(),
        "{:?}",
        findings(&t, "Telemetry")
    );
    let user = CustomTag {
        tag: "user".into(),
        source: Some(custom_tag::Source::Header(ValueFrom {
            name: "x-user".into(),
            default_value: "anonymous".into(),
        })),
    };
    let remove = MetricOverride {
        metric: "REQUEST_COUNT".into(),
        remove_tags: vec!["request_protocol".into()],
        ..MetricOverride::default()
    };
    // payments: the mesh's provider and tags, the namespace's sampling, tag and access log
    // switch, the waypoint's span reporting.
    assert_eq!(
        telemetry_of(&t, "payments"),
        Some(Telemetry {
            tracing: Some(Tracing {
                provider: "otel".into(),
                random_sampling_percentage: 50.0,
                custom_tags: vec![
                    literal("env", "prod"),
                    literal("team", "core"),
                    user.clone()
                ],
                disable_span_reporting: true,
            }),
            access_log_disabled: true,
            metric_overrides: vec![remove.clone()],
            sources: vec![
                source("istio-system", "mesh-default"),
                source("shop", "shop"),
                source("shop", "at-waypoint"),
            ],
        })
    );
    // orders: its own Telemetry overrides sampling, the env tag and the access log switch, and
    // adds an override after the inherited one.
    let env = CustomTag {
        tag: "env".into(),
        source: Some(custom_tag::Source::Environment(ValueFrom {
            name: "POD_NAMESPACE".into(),
            default_value: String::new(),
        })),
    };
    let orders = telemetry_of(&t, "orders").expect("configured");
    assert_eq!(
        orders.tracing,
        Some(Tracing {
            provider: "otel".into(),
            random_sampling_percentage: 100.0,
            custom_tags: vec![env, literal("team", "core"), user],
            disable_span_reporting: true,
        })
    );
    assert!(!orders.access_log_disabled);
    let upsert = MetricOverride {
        metric: "REQUEST_COUNT".into(),
        upsert_tags: vec![Header {
            name: "track".into(),
            value: "canary".into(),
        }],
        ..MetricOverride::default()
    };
    assert_eq!(orders.metric_overrides, [remove, upsert]);
    assert_eq!(orders.sources.len(), 4);
    assert_eq!(orders.sources[3], source("shop", "orders"));
    assert_eq!(shop(&t).tracing_providers, [otel()]);
}

#[test]
fn a_provider_that_is_not_declared_is_reported_and_tracing_is_off_there() {
    let jaeger = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tracing, namespace: shop}
spec:
  tracing:
  - providers: [{name: jaeger}]
    randomSamplingPercentage: 10.0
";
    let t = run_with(&[MESH_CONFIG, jaeger]);
    let found = problem(&t, "tracing", "spec.tracing[0].providers[0].name");
    assert!(found.is_warning());
    assert_eq!(found.namespace, "shop");
    assert!(
        found
            .message
            .contains("\"jaeger\" names no extension provider of the mesh config"),
        "{found}"
    );
    assert!(found.message.contains("tracing is off"), "{found}");
    let telemetry = telemetry_of(&t, "orders").expect("the Telemetry applies");
    assert_eq!(telemetry.tracing, None);
    assert_eq!(telemetry.sources, [source("shop", "tracing")]);
    assert!(shop(&t).tracing_providers.is_empty());
    // The Zipkin provider is declared, but not OpenTelemetry: off as well.
    let zipkin = jaeger.replace("jaeger", "zipkin");
    let t = run_with(&[MESH_CONFIG, &zipkin]);
    let found = problem(&t, "tracing", "spec.tracing[0].providers[0].name");
    assert!(
        found
            .message
            .contains("provider kind zipkin is not supported"),
        "{found}"
    );
    assert_eq!(tracing_of(&t, "payments"), None);
    // Without any mesh config, the same.
    let t = run_with(&[jaeger]);
    assert_eq!(tracing_of(&t, "orders"), None);
    problem(&t, "tracing", "spec.tracing[0].providers[0].name");
}

#[test]
fn tag_overrides_take_string_literals_and_skip_other_expressions() {
    let overrides = "\
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: metrics, namespace: shop}
spec:
  metrics:
  - providers: [{name: prometheus}]
    reportingInterval: 10s
    overrides:
    - match: {metric: REQUEST_DURATION}
      tagOverrides:
        a: {operation: UPSERT, value: \"'one'\"}
        b: {value: '\"two\"'}
        c: {value: request.host}
        d: {operation: REMOVE}
    - match: {metric: GRPC_REQUEST_MESSAGES}
      disabled: true
    - match: {customMetric: my_metric}
      disabled: true
    - match: {metric: TCP_SENT_BYTES}
      disabled: true
    - match: {metric: REQUEST_SIZE, mode: CLIENT}
      disabled: true
    - tagOverrides: {e: {value: \"'all'\"}}
";
    let t = run_with(&[overrides]);
    let overrides = telemetry_of(&t, "orders")
        .expect("configured")
        .metric_overrides;
    let header = |name: &str, value: &str| Header {
        name: name.into(),
        value: value.into(),
    };
    assert_eq!(
        overrides,
        [
            MetricOverride {
                metric: "REQUEST_DURATION".into(),
                remove_tags: vec!["d".into()],
                upsert_tags: vec![header("a", "one"), header("b", "two")],
                disabled: false,
            },
            MetricOverride {
                metric: "ALL_METRICS".into(),
                upsert_tags: vec![header("e", "all")],
                ..MetricOverride::default()
            },
        ]
    );
    let fields: Vec<String> = findings(&t, "Telemetry")
        .into_iter()
        .map(|(object, field, warning)| {
            assert!(warning, "{field}");
            assert_eq!(object, "shop/metrics");
            field
        })
        .collect();
    assert_eq!(
        fields,
        [
            "spec.metrics[0].reportingInterval",
            "spec.metrics[0].overrides[0].tagOverrides[c].value",
            "spec.metrics[0].overrides[1].match.metric",
            "spec.metrics[0].overrides[2].match.customMetric",
            "spec.metrics[0].overrides[3].match.metric",
            "spec.metrics[0].overrides[4].match.mode",
        ]
    );
    let cel = problem(
        &t,
        "metrics",
        "spec.metrics[0].overrides[0].tagOverrides[c].value",
    );
    assert!(cel.message.contains("CEL expression"), "{cel}");
    let grpc = problem(&t, "metrics", "spec.metrics[0].overrides[1].match.metric");
    assert!(grpc.message.contains("does not record"), "{grpc}");
    let tcp = problem(&t, "metrics", "spec.metrics[0].overrides[3].match.metric");
    assert!(
        tcp.message.contains("ztunnel reads only accessLogging"),
        "{tcp}"
    );
}

#[test]
fn v1alpha1_and_v1_read_alike() {
    let v1 = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10.0}]
";
    let alpha = v1.replace("/v1\n", "/v1alpha1\n");
    assert_ne!(alpha, v1);
    let a = run_with(&[MESH_CONFIG, v1]);
    let b = run_with(&[MESH_CONFIG, &alpha]);
    assert_eq!(shop(&a), shop(&b));
    assert_eq!(
        tracing_of(&a, "orders").map(|t| t.random_sampling_percentage),
        Some(10.0)
    );
}

#[test]
fn what_the_waypoint_does_not_act_on_is_reported_with_a_hint() {
    let unread = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: by-label, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  tracing: [{randomSamplingPercentage: 5.0}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: lab, namespace: lab}
spec:
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: clients, namespace: shop}
spec:
  targetRefs:
  - {kind: Service, name: payments}
  - {kind: Service, name: nowhere}
  - {group: gateway.networking.k8s.io, kind: Gateway, name: ingress}
  - {group: apps, kind: Deployment, name: payments}
  tracing:
  - match: {mode: CLIENT}
    randomSamplingPercentage: 5.0
  accessLogging:
  - filter: {expression: response.code >= 400}
    providers: [{name: otel-als}]
";
    let t = run_with(&[MESH_CONFIG, unread]);
    let mut found = findings(&t, "Telemetry");
    found.sort();
    let at = |object: &str, field: &str| (object.to_string(), field.to_string(), true);
    assert_eq!(
        found,
        [
            at("shop/by-label", "spec.selector"),
            at("shop/clients", "spec.accessLogging[0].filter"),
            at("shop/clients", "spec.accessLogging[0].providers[0].name"),
            at("shop/clients", "spec.targetRefs[1].name"),
            at("shop/clients", "spec.targetRefs[2].name"),
            at("shop/clients", "spec.targetRefs[3].kind"),
            at("shop/clients", "spec.tracing[0].match.mode"),
        ]
    );
    // Only access logging, in a namespace no waypoint serves: ztunnel acts on it, so it is
    // no finding, and the node proxies' switches say so.
    let (name, switches) = t
        .snapshot
        .of_type(api::ACCESS_LOGGING_TYPE_URL)
        .next()
        .expect("the access log switches");
    assert_eq!(name, api::ACCESS_LOGGING_NAME);
    let switches: api::telemetry::AccessLogging = api::unpack(&switches.body).unwrap();
    assert_eq!(
        switches,
        api::telemetry::AccessLogging {
            namespaces: [("lab".to_string(), true)].into(),
            ..Default::default()
        }
    );
    let selector = problem(&t, "by-label", "spec.selector");
    assert!(selector.message.contains("use targetRefs"), "{selector}");
    // payments gets the Telemetry (a filter does not stop the rest), with the mesh defaults:
    // its CLIENT-only tracing entry has no effect.
    let payments = telemetry_of(&t, "payments").expect("configured");
    assert_eq!(payments.sources, [source("shop", "clients")]);
    assert_eq!(
        payments.tracing.map(|t| t.random_sampling_percentage),
        Some(2.5)
    );
    assert_eq!(
        telemetry_of(&t, "orders").and_then(|t| t.tracing),
        tracing_of(&run_with(&[MESH_CONFIG]), "orders")
    );
}

/// A pod `name` of Deployment `deployment` in `ns` with label app=`app`.
fn deployment_pod(ns: &str, deployment: &str, name: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{app: {app}, pod-template-hash: 5f4b}}\n  ownerReferences: [{{kind: ReplicaSet, \
         name: {deployment}-5f4b, controller: true}}]\nspec: {{nodeName: node1}}\n\
         status: {{phase: Running, podIP: 10.244.1.{}}}\n",
        name.len()
    )
}

#[test]
fn a_selector_switches_the_access_log_of_the_workloads_it_picks() {
    let pods = [
        deployment_pod("shop", "orders", "orders-5f4b-aaaaa", "orders"),
        deployment_pod("shop", "payments", "payments-5f4b-bbbbbb", "payments"),
        deployment_pod("lab", "orders", "orders-5f4b-ccccccc", "orders"),
    ];
    let telemetry = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet-orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  accessLogging: [{disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: loud-payments, namespace: istio-system}
spec:
  selector: {matchLabels: {app: payments}}
  accessLogging: [{disabled: false}]
";
    let mut docs: Vec<&str> = pods.iter().map(String::as_str).collect();
    docs.push(telemetry);
    let t = run_with(&docs);
    let (_, switches) = t
        .snapshot
        .of_type(api::ACCESS_LOGGING_TYPE_URL)
        .next()
        .expect("the access log switches");
    let switches: api::telemetry::AccessLogging = api::unpack(&switches.body).unwrap();
    // shop's orders only (lab's orders is another namespace's); the root namespace's selector
    // picks payments wherever it runs.
    assert_eq!(
        switches.workloads,
        [
            ("shop/orders".to_string(), true),
            ("shop/payments".to_string(), false),
        ]
        .into()
    );
    // Access logging alone: nothing to report.
    assert_eq!(findings(&t, "Telemetry"), Vec::new());
}

#[test]
fn one_namespace_wide_telemetry_per_namespace_the_oldest() {
    let two = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: first, namespace: shop, creationTimestamp: '2024-01-01T00:00:00Z'}
spec: {accessLogging: [{disabled: true}]}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: second, namespace: shop, creationTimestamp: '2024-02-01T00:00:00Z'}
spec: {accessLogging: [{disabled: false}]}
";
    let t = run_with(&[two]);
    let telemetry = telemetry_of(&t, "orders").expect("configured");
    assert!(telemetry.access_log_disabled);
    assert_eq!(telemetry.sources, [source("shop", "first")]);
    let second = problem(&t, "second", "");
    assert!(second.message.contains("shop/first"), "{second}");
}

#[test]
fn bad_mesh_config_is_an_error_and_the_last_good_one_stays_in_force() {
    let index = |config: &str| index_from("mesh.yaml", &[MESH, config].join("---\n"));
    let mut translator = Translator::new(TranslateOptions::default());
    let good = translator.translate(&index(MESH_CONFIG));
    assert_eq!(shop(&good).tracing_providers, [otel()]);
    let broken = MESH_CONFIG.replace("sampling: 2.5", "sampling: [");
    let bad = translator.translate(&index(&broken));
    let error = bad
        .problems
        .iter()
        .find(|p| p.kind == "ConfigMap")
        .expect("reported");
    assert!(!error.is_warning(), "{error}");
    assert_eq!(
        (error.namespace.as_str(), error.name.as_str()),
        ("istio-system", "istio")
    );
    assert!(error.field.starts_with("data.mesh"), "{error}");
    assert!(
        error.message.contains("keeping its last good version"),
        "{error}"
    );
    assert_eq!(shop(&bad), shop(&good));
    // A fresh controller has no good version: the defaults apply.
    let fresh = translate(&index(&broken), &TranslateOptions::default());
    assert!(shop(&fresh).tracing_providers.is_empty());
    assert!(tracing_of(&fresh, "orders").is_none());
    // A wrong type names the field inside the YAML.
    let typed = MESH_CONFIG.replace("port: 4317", "port: high");
    let t = translate(&index(&typed), &TranslateOptions::default());
    problem(
        &t,
        "istio",
        "data.mesh.extensionProviders[0].opentelemetry.port",
    );
}

#[test]
fn an_http_provider_exports_over_otlp_http_with_its_headers_and_deadline() {
    let http = MESH_CONFIG.replace(
        "        maxTagLength: 128\n",
        "        maxTagLength: 128
        http:
          path: /v1/traces
          timeout: 3s
          headers:
          - {name: X-Api-Key, value: k1}
          - {name: x-token, envName: MESH_TEST_UNSET_VARIABLE}
        grpc:
          timeout: 1s
",
    );
    let t = run_with(&[&http]);
    let provider = &shop(&t).tracing_providers[0];
    assert_eq!(
        (provider.http_path.as_str(), provider.timeout_ms),
        ("/v1/traces", 3000)
    );
    let headers: Vec<(&str, &str)> = provider
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(headers, [("x-api-key", "k1"), ("x-token", "")]);
    // Said, not silently dropped: the unset variable and the unused grpc block.
    let unset = problem(
        &t,
        "istio",
        "data.mesh.extensionProviders[0].opentelemetry.http.headers[1]",
    );
    assert!(
        unset.message.contains("MESH_TEST_UNSET_VARIABLE"),
        "{unset}"
    );
    problem(
        &t,
        "istio",
        "data.mesh.extensionProviders[0].opentelemetry.grpc",
    );
    // gRPC stays the default, its own deadline applied.
    let grpc = MESH_CONFIG.replace(
        "        maxTagLength: 128\n",
        "        maxTagLength: 128\n        grpc: {timeout: 2s}\n",
    );
    let provider = &shop(&run_with(&[&grpc])).tracing_providers[0];
    assert_eq!(
        (provider.http_path.as_str(), provider.timeout_ms),
        ("", 2000)
    );
}

#[test]
fn a_mesh_config_outside_the_root_namespace_is_not_read() {
    let elsewhere = MESH_CONFIG.replace("namespace: istio-system", "namespace: shop");
    let t = run_with(&[&elsewhere]);
    assert!(shop(&t).services.iter().all(|s| s.telemetry.is_none()));
    let options = TranslateOptions {
        root_namespace: "shop".into(),
        ..TranslateOptions::default()
    };
    let t = translate(
        &index_from("mesh.yaml", &[MESH, &elsewhere].join("---\n")),
        &options,
    );
    assert_eq!(shop(&t).tracing_providers, [otel()]);
}

#[test]
fn tracing_without_any_provider_is_reported_once_per_service() {
    let sampling_only = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 10.0}]
";
    let t = run_with(&[sampling_only]);
    assert_eq!(tracing_of(&t, "orders"), None);
    let found: Vec<&Problem> = t
        .problems
        .iter()
        .filter(|p| p.field == "spec.tracing[0].providers")
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0]
            .message
            .contains("no spans are recorded for Service shop/orders"),
        "{}",
        found[0]
    );
    // With the mesh's default provider, the same Telemetry only sets the sampling.
    let t = run_with(&[MESH_CONFIG, sampling_only]);
    assert_eq!(
        tracing_of(&t, "orders").map(|t| (t.provider, t.random_sampling_percentage)),
        Some(("otel".to_string(), 10.0))
    );
    assert!(findings(&t, "Telemetry").is_empty());
}
