//! Waypoint configuration as readable JSON, for `/debug/config_dump`:
//! durations as `1.5s`, enumerations by name, oneofs by their case, unset
//! fields left out.

use api::prost_types::Duration;
use api::waypoint::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition, ConditionKey,
    ConfigSource, Destination, DestinationPolicy, Forward, HeaderMatch, HeaderModifier, IpBlock,
    LoadBalancer, LocalRateLimit, PathMatch, PolicyScope, Protocol, Route, RouteMatch, Service,
    StringMatch, Telemetry, Tracing, TracingProvider, TrafficPolicy, Waypoint, WeightedDestination,
    WorkloadRateLimit, custom_tag, path_match, redirect, route, string_match, url_rewrite,
};
use serde_json::{Map, Value, json};

/// The whole configuration of one waypoint.
pub fn waypoint_json(w: &Waypoint) -> Value {
    json!({
        "name": w.name,
        "namespace": w.namespace,
        "services": w.services.iter().map(service).collect::<Vec<_>>(),
        "destinations": w.destinations.iter().map(destination_policy).collect::<Vec<_>>(),
        "authorizationPolicies": w.authorization_policies.iter().map(authz).collect::<Vec<_>>(),
        "tracingProviders": w.tracing_providers.iter().map(tracing_provider).collect::<Vec<_>>(),
        "workloadRateLimits": w.workload_rate_limits.iter().map(workload_rate_limit).collect::<Vec<_>>(),
    })
}

/// An object with the entries whose value is not null, empty or false.
fn obj(entries: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in entries {
        let empty = match &v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Number(n) => n.as_f64() == Some(0.0),
        };
        if !empty {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn list<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(f).collect())
}

fn dur(d: &Option<Duration>) -> Value {
    match d {
        Some(d) if d.nanos == 0 => json!(format!("{}s", d.seconds)),
        Some(d) => {
            let s = format!("{}.{:09}", d.seconds, d.nanos);
            json!(format!("{}s", s.trim_end_matches('0')))
        }
        None => Value::Null,
    }
}

fn source(s: &Option<ConfigSource>) -> Value {
    s.as_ref().map_or(Value::Null, |s| {
        json!(format!("{} {}/{}", s.kind, s.namespace, s.name))
    })
}

fn service(s: &Service) -> Value {
    obj(vec![
        ("hostname", json!(s.hostname)),
        ("addresses", json!(s.addresses)),
        (
            "ports",
            list(&s.ports, |p| {
                let protocol = Protocol::try_from(p.protocol).map_or("?", |p| p.as_str_name());
                obj(vec![
                    ("name", json!(p.name)),
                    ("port", json!(p.port)),
                    ("targetPort", json!(p.target_port)),
                    ("protocol", json!(protocol)),
                ])
            }),
        ),
        ("routes", list(&s.routes, route_json)),
        (
            "rateLimit",
            s.rate_limit.as_ref().map_or(Value::Null, rate_limit),
        ),
        (
            "telemetry",
            s.telemetry.as_ref().map_or(Value::Null, telemetry),
        ),
    ])
}

fn tracing_provider(p: &TracingProvider) -> Value {
    obj(vec![
        ("name", json!(p.name)),
        ("service", json!(p.service)),
        ("namespace", json!(p.namespace)),
        ("port", json!(p.port)),
        ("maxTagLength", json!(p.max_tag_length)),
        ("httpPath", json!(p.http_path)),
        ("timeoutMs", json!(p.timeout_ms)),
        // Names only: a header often carries a collector's API key.
        ("headers", json!(p.headers.keys().collect::<Vec<_>>())),
    ])
}

fn telemetry(t: &Telemetry) -> Value {
    obj(vec![
        ("tracing", t.tracing.as_ref().map_or(Value::Null, tracing)),
        ("accessLogDisabled", json!(t.access_log_disabled)),
        (
            "metricOverrides",
            list(&t.metric_overrides, |o| {
                let upsert: Map<String, Value> = o
                    .upsert_tags
                    .iter()
                    .map(|h| (h.name.clone(), json!(h.value)))
                    .collect();
                obj(vec![
                    ("metric", json!(o.metric)),
                    ("disabled", json!(o.disabled)),
                    ("removeTags", json!(o.remove_tags)),
                    ("upsertTags", Value::Object(upsert)),
                ])
            }),
        ),
        ("sources", list(&t.sources, |s| source(&Some(s.clone())))),
    ])
}

fn tracing(t: &Tracing) -> Value {
    let tags = list(&t.custom_tags, |tag| {
        let from = |v: &api::waypoint::ValueFrom| {
            obj(vec![
                ("name", json!(v.name)),
                ("defaultValue", json!(v.default_value)),
            ])
        };
        let (kind, value) = match &tag.source {
            Some(custom_tag::Source::Literal(text)) => ("literal", json!(text)),
            Some(custom_tag::Source::Header(h)) => ("header", from(h)),
            Some(custom_tag::Source::Environment(e)) => ("environment", from(e)),
            None => ("unset", Value::Null),
        };
        json!({"tag": tag.tag, kind: value})
    });
    let mut out = obj(vec![
        ("provider", json!(t.provider)),
        ("customTags", tags),
        ("disableSpanReporting", json!(t.disable_span_reporting)),
    ]);
    // 0 % is a setting, not an unset field.
    out["randomSamplingPercentage"] = json!(t.random_sampling_percentage);
    out
}

fn rate_limit(l: &LocalRateLimit) -> Value {
    obj(vec![
        ("maxTokens", json!(l.max_tokens)),
        ("tokensPerFill", json!(l.tokens_per_fill)),
        ("fillInterval", dur(&l.fill_interval)),
        ("source", source(&l.source)),
    ])
}

fn string_match(m: &StringMatch) -> Value {
    let (k, v) = match &m.kind {
        Some(string_match::Kind::Exact(s)) => ("exact", json!(s)),
        Some(string_match::Kind::Prefix(s)) => ("prefix", json!(s)),
        Some(string_match::Kind::Suffix(s)) => ("suffix", json!(s)),
        Some(string_match::Kind::Regex(s)) => ("regex", json!(s)),
        Some(string_match::Kind::Present(())) => ("present", json!(true)),
        None => return Value::Null,
    };
    obj(vec![(k, v), ("ignoreCase", json!(m.ignore_case))])
}

fn path_json(m: &PathMatch) -> Value {
    let (k, v) = match &m.kind {
        Some(path_match::Kind::Exact(s)) => ("exact", s),
        Some(path_match::Kind::Prefix(s)) => ("prefix", s),
        Some(path_match::Kind::SegmentPrefix(s)) => ("segmentPrefix", s),
        Some(path_match::Kind::Regex(s)) => ("regex", s),
        None => return Value::Null,
    };
    obj(vec![(k, json!(v)), ("ignoreCase", json!(m.ignore_case))])
}

fn header_match(h: &HeaderMatch) -> Value {
    obj(vec![
        ("name", json!(h.name)),
        ("value", h.value.as_ref().map_or(Value::Null, string_match)),
        ("invert", json!(h.invert)),
    ])
}

fn route_match(m: &RouteMatch) -> Value {
    obj(vec![
        ("path", m.path.as_ref().map_or(Value::Null, path_json)),
        (
            "method",
            m.method.as_ref().map_or(Value::Null, string_match),
        ),
        ("headers", list(&m.headers, header_match)),
        (
            "queryParams",
            list(&m.query_params, |q| {
                obj(vec![
                    ("name", json!(q.name)),
                    ("value", q.value.as_ref().map_or(Value::Null, string_match)),
                ])
            }),
        ),
        ("notPaths", list(&m.not_paths, path_json)),
        ("notMethods", list(&m.not_methods, string_match)),
        ("port", json!(m.port)),
        ("sourceNamespace", json!(m.source_namespace)),
    ])
}

fn headers(h: &Option<HeaderModifier>) -> Value {
    let Some(h) = h else { return Value::Null };
    let pairs =
        |v: &[api::waypoint::Header]| list(v, |x| json!({ "name": x.name, "value": x.value }));
    obj(vec![
        ("set", pairs(&h.set)),
        ("add", pairs(&h.add)),
        ("remove", json!(h.remove)),
    ])
}

fn destination(d: &Option<Destination>) -> Value {
    let Some(d) = d else { return Value::Null };
    obj(vec![
        ("hostname", json!(d.hostname)),
        ("port", json!(d.port)),
        ("subset", json!(d.subset)),
        ("subsetLabels", json!(d.subset_labels)),
    ])
}

fn forward(f: &Forward) -> Value {
    let rewrite = f.rewrite.as_ref().map_or(Value::Null, |r| {
        let path = match &r.path {
            Some(url_rewrite::Path::FullPath(p)) => json!({ "fullPath": p }),
            Some(url_rewrite::Path::Prefix(p)) => json!({ "prefix": p }),
            Some(url_rewrite::Path::Regex(x)) => {
                json!({ "regex": { "pattern": x.pattern, "substitution": x.substitution } })
            }
            None => Value::Null,
        };
        obj(vec![("path", path), ("host", json!(r.host))])
    });
    let retry = f.retry.as_ref().map_or(Value::Null, |r| {
        obj(vec![
            ("attempts", json!(r.attempts)),
            ("retryOn", json!(r.retry_on)),
            ("retriableStatusCodes", json!(r.retriable_status_codes)),
            ("backoff", dur(&r.backoff)),
            ("retryNonIdempotent", json!(r.retry_non_idempotent)),
        ])
    });
    obj(vec![
        (
            "destinations",
            list(&f.destinations, |w: &WeightedDestination| {
                obj(vec![
                    ("destination", destination(&w.destination)),
                    ("weight", json!(w.weight)),
                    ("requestHeaders", headers(&w.request_headers)),
                    ("responseHeaders", headers(&w.response_headers)),
                ])
            }),
        ),
        ("rewrite", rewrite),
        (
            "mirrors",
            list(&f.mirrors, |m| {
                let to = destination(&m.destination);
                json!({ "destination": to, "percentage": m.percentage })
            }),
        ),
        ("timeout", dur(&f.timeout)),
        ("attemptTimeout", dur(&f.attempt_timeout)),
        ("retry", retry),
    ])
}

fn route_json(r: &Route) -> Value {
    let action = match &r.action {
        Some(route::Action::Forward(f)) => ("forward", forward(f)),
        Some(route::Action::Redirect(x)) => {
            let path = match &x.path {
                Some(redirect::Path::FullPath(p)) => json!({ "fullPath": p }),
                Some(redirect::Path::Prefix(p)) => json!({ "prefix": p }),
                None => Value::Null,
            };
            (
                "redirect",
                obj(vec![
                    ("scheme", json!(x.scheme)),
                    ("host", json!(x.host)),
                    ("port", json!(x.port)),
                    ("path", path),
                    ("status", json!(x.status)),
                ]),
            )
        }
        Some(route::Action::DirectResponse(d)) => (
            "directResponse",
            json!({ "status": d.status, "body": String::from_utf8_lossy(&d.body) }),
        ),
        None => ("action", Value::Null),
    };
    let fault = r.fault.as_ref().map_or(Value::Null, |f| {
        obj(vec![
            (
                "delay",
                f.delay.as_ref().map_or(
                    Value::Null,
                    |d| json!({ "fixedDelay": dur(&d.fixed_delay), "percentage": d.percentage }),
                ),
            ),
            (
                "abort",
                f.abort.as_ref().map_or(Value::Null, |a| {
                    obj(vec![
                        ("httpStatus", json!(a.http_status)),
                        ("grpcStatus", json!(a.grpc_status)),
                        ("percentage", json!(a.percentage)),
                    ])
                }),
            ),
        ])
    });
    obj(vec![
        ("name", json!(r.name)),
        ("ruleName", json!(r.rule_name)),
        ("source", source(&r.source)),
        ("matches", list(&r.matches, route_match)),
        action,
        ("requestHeaders", headers(&r.request_headers)),
        ("responseHeaders", headers(&r.response_headers)),
        ("fault", fault),
    ])
}

fn traffic_policy(p: &Option<TrafficPolicy>) -> Value {
    let Some(p) = p else { return Value::Null };
    let lb = LoadBalancer::try_from(p.load_balancer).map_or("?", |l| l.as_str_name());
    let pool = p.connection_pool.as_ref().map_or(Value::Null, |c| {
        obj(vec![
            ("maxConnections", json!(c.max_connections)),
            ("maxPendingRequests", json!(c.max_pending_requests)),
            ("maxRequests", json!(c.max_requests)),
            (
                "maxRequestsPerConnection",
                json!(c.max_requests_per_connection),
            ),
            ("maxRetries", json!(c.max_retries)),
            ("connectTimeout", dur(&c.connect_timeout)),
        ])
    });
    let outlier = p.outlier_detection.as_ref().map_or(Value::Null, |o| {
        obj(vec![
            ("consecutive5xxErrors", json!(o.consecutive_5xx_errors)),
            (
                "consecutiveGatewayErrors",
                json!(o.consecutive_gateway_errors),
            ),
            ("interval", dur(&o.interval)),
            ("baseEjectionTime", dur(&o.base_ejection_time)),
            ("maxEjectionPercent", json!(o.max_ejection_percent)),
        ])
    });
    obj(vec![
        ("loadBalancer", json!(lb)),
        ("connectionPool", pool),
        ("outlierDetection", outlier),
    ])
}

fn destination_policy(d: &DestinationPolicy) -> Value {
    obj(vec![
        ("hostname", json!(d.hostname)),
        ("trafficPolicy", traffic_policy(&d.traffic_policy)),
        (
            "subsets",
            list(&d.subsets, |s| {
                obj(vec![
                    ("name", json!(s.name)),
                    ("labels", json!(s.labels)),
                    ("workloads", json!(s.workload_uids)),
                    ("trafficPolicy", traffic_policy(&s.traffic_policy)),
                ])
            }),
        ),
        (
            "retryBudget",
            d.retry_budget.as_ref().map_or(Value::Null, |b| {
                json!({
                    "retryRatio": b.retry_ratio,
                    "minRetriesPerSecond": b.min_retries_per_second,
                    "ttl": dur(&b.ttl),
                })
            }),
        ),
        ("sources", list(&d.sources, |s| source(&Some(s.clone())))),
    ])
}

fn ip_block(b: &IpBlock) -> Value {
    let ip = super::services::ip_text(&b.address).unwrap_or_else(|| "?".to_string());
    json!(format!("{ip}/{}", b.prefix_len))
}

fn condition(c: &Condition) -> Value {
    let key = ConditionKey::try_from(c.key).map_or("?", |k| k.as_str_name());
    obj(vec![
        ("key", json!(key)),
        ("header", json!(c.header)),
        ("values", list(&c.values, string_match)),
        ("notValues", list(&c.not_values, string_match)),
        ("ipValues", list(&c.ip_values, ip_block)),
        ("notIpValues", list(&c.not_ip_values, ip_block)),
        ("portValues", json!(c.port_values)),
        ("notPortValues", json!(c.not_port_values)),
    ])
}

fn rule(r: &AuthorizationRule) -> Value {
    obj(vec![
        (
            "from",
            list(&r.from, |s| {
                obj(vec![
                    ("principals", list(&s.principals, string_match)),
                    ("notPrincipals", list(&s.not_principals, string_match)),
                    ("namespaces", list(&s.namespaces, string_match)),
                    ("notNamespaces", list(&s.not_namespaces, string_match)),
                    ("ipBlocks", list(&s.ip_blocks, ip_block)),
                    ("notIpBlocks", list(&s.not_ip_blocks, ip_block)),
                    ("remoteIpBlocks", list(&s.remote_ip_blocks, ip_block)),
                    ("notRemoteIpBlocks", list(&s.not_remote_ip_blocks, ip_block)),
                ])
            }),
        ),
        (
            "to",
            list(&r.to, |o| {
                obj(vec![
                    ("hosts", list(&o.hosts, string_match)),
                    ("notHosts", list(&o.not_hosts, string_match)),
                    ("ports", json!(o.ports)),
                    ("notPorts", json!(o.not_ports)),
                    ("methods", list(&o.methods, string_match)),
                    ("notMethods", list(&o.not_methods, string_match)),
                    ("paths", list(&o.paths, string_match)),
                    ("notPaths", list(&o.not_paths, string_match)),
                ])
            }),
        ),
        ("when", list(&r.when, condition)),
    ])
}

fn authz(p: &AuthorizationPolicy) -> Value {
    let action = AuthorizationAction::try_from(p.action).map_or("?", |a| a.as_str_name());
    let scope = PolicyScope::try_from(p.scope).map_or("?", |s| s.as_str_name());
    // An empty rule matches everything; keep it visible.
    let rules: Vec<Value> = p.rules.iter().map(rule).collect();
    obj(vec![
        ("name", json!(p.name)),
        ("namespace", json!(p.namespace)),
        ("action", json!(action)),
        ("scope", json!(scope)),
        ("services", json!(p.services)),
        (
            "workloads",
            p.workloads.as_ref().map_or(Value::Null, |w| {
                obj(vec![
                    ("namespace", json!(w.namespace)),
                    ("labels", json!(w.labels)),
                    ("workloads", json!(w.workload_uids)),
                ])
            }),
        ),
        ("rules", Value::Array(rules)),
        ("ruleCount", json!(p.rules.len())),
        ("notFound", json!(p.not_found)),
    ])
}

/// A workload rate limit (Linkerd's HTTPLocalRateLimitPolicy).
fn workload_rate_limit(l: &WorkloadRateLimit) -> Value {
    let overrides: Vec<Value> = l
        .overrides
        .iter()
        .map(|o| {
            obj(vec![
                ("principals", json!(o.principals)),
                ("limit", o.limit.as_ref().map_or(Value::Null, rate_limit)),
            ])
        })
        .collect();
    obj(vec![
        ("name", json!(l.name)),
        ("namespace", json!(l.namespace)),
        ("workloads", json!(l.workload_uids)),
        ("ports", json!(l.ports)),
        ("total", l.total.as_ref().map_or(Value::Null, rate_limit)),
        (
            "perIdentity",
            l.per_identity.as_ref().map_or(Value::Null, rate_limit),
        ),
        ("overrides", Value::Array(overrides)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_durations_enums_and_oneofs() {
        assert_eq!(
            dur(&Some(Duration {
                seconds: 1,
                nanos: 500_000_000
            })),
            json!("1.5s")
        );
        assert_eq!(
            dur(&Some(Duration {
                seconds: 10,
                nanos: 0
            })),
            json!("10s")
        );
        let w = Waypoint {
            name: "w".into(),
            namespace: "n".into(),
            services: vec![Service {
                hostname: "h".into(),
                ports: vec![api::waypoint::Port {
                    port: 80,
                    protocol: Protocol::Http as i32,
                    ..Default::default()
                }],
                routes: vec![Route {
                    name: "r".into(),
                    action: Some(route::Action::Forward(Forward {
                        timeout: Some(Duration {
                            seconds: 2,
                            nanos: 0,
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = waypoint_json(&w);
        assert_eq!(v["services"][0]["ports"][0]["protocol"], "PROTOCOL_HTTP");
        assert_eq!(v["services"][0]["routes"][0]["forward"]["timeout"], "2s");
        assert!(
            v["services"][0].get("rateLimit").is_none(),
            "unset fields left out"
        );
        assert!(v["services"][0].get("telemetry").is_none());
    }

    #[test]
    fn renders_telemetry_with_a_zero_sampling_percentage() {
        let service = Service {
            telemetry: Some(Telemetry {
                tracing: Some(Tracing {
                    provider: "otel".into(),
                    random_sampling_percentage: 0.0,
                    custom_tags: vec![api::waypoint::CustomTag {
                        tag: "env".into(),
                        source: Some(custom_tag::Source::Literal("prod".into())),
                    }],
                    disable_span_reporting: false,
                }),
                access_log_disabled: true,
                metric_overrides: vec![api::waypoint::MetricOverride {
                    metric: "REQUEST_COUNT".into(),
                    remove_tags: vec!["request_protocol".into()],
                    ..Default::default()
                }],
                sources: vec![ConfigSource {
                    kind: "Telemetry".into(),
                    namespace: "istio-system".into(),
                    name: "mesh-default".into(),
                }],
            }),
            ..Default::default()
        };
        let w = Waypoint {
            services: vec![service],
            tracing_providers: vec![TracingProvider {
                name: "otel".into(),
                service: "otel.obs.svc.cluster.local".into(),
                namespace: "obs".into(),
                port: 4317,
                ..Default::default()
            }],
            ..Default::default()
        };
        let v = waypoint_json(&w);
        assert_eq!(
            v["services"][0]["telemetry"],
            json!({
                "tracing": {"provider": "otel", "randomSamplingPercentage": 0.0,
                            "customTags": [{"tag": "env", "literal": "prod"}]},
                "accessLogDisabled": true,
                "metricOverrides": [{"metric": "REQUEST_COUNT", "removeTags": ["request_protocol"]}],
                "sources": ["Telemetry istio-system/mesh-default"],
            })
        );
        assert_eq!(
            v["tracingProviders"],
            json!([{"name": "otel", "service": "otel.obs.svc.cluster.local", "namespace": "obs",
                    "port": 4317}])
        );
    }
}
