//! `meshctl stat --prometheus`: the rows of [`super::stat`] computed by an existing Prometheus
//! instead of two scrapes. The PromQL instant queries over a `[window]` range, as Istio's
//! Grafana dashboards and Kiali ask them (`increase` / `rate` of `istio_requests_total`,
//! success as `response_code!~"5.*"`, `histogram_quantile` over the duration buckets,
//! `istio_tcp_*{reporter="destination"}`, `connection_security_policy="mutual_tls"`), and the
//! conversion of Prometheus's answers (`/api/v1/query`, result type `vector`) into the same
//! rows. Pure: the HTTP client is `host::prometheus`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::stat::{Resource, Row, Target};

/// Who reports requests: a waypoint (ambient) or the server's sidecar, never both for one
/// request, and never the client's side, which would count each request twice.
const REQUEST_REPORTERS: (&str, &str, &str) = ("reporter", "=~", "destination|waypoint");
/// TCP figures as the server's ztunnel reports them, as scrape-based `stat` reads them.
const TCP_REPORTER: (&str, &str, &str) = ("reporter", "=", "destination");

/// What one query measures, per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    /// Requests in the window.
    Requests,
    /// Requests in the window not answered 5xx.
    Successes,
    /// Latency percentiles, milliseconds.
    LatencyP50,
    /// 95th percentile.
    LatencyP95,
    /// 99th percentile.
    LatencyP99,
    /// TCP connections opened in the window.
    TcpOpened,
    /// Of those, the mutual TLS ones.
    TcpOpenedMutualTls,
    /// TCP connections opened since the proxies started (for those open now).
    TcpOpenedEver,
    /// TCP connections closed since the proxies started.
    TcpClosedEver,
    /// Bytes per second the destination received.
    ReadBytesPerSecond,
    /// Bytes per second the destination sent.
    WriteBytesPerSecond,
}

/// One PromQL instant query of a stat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// What its answer is.
    pub measure: Measure,
    /// The expression.
    pub promql: String,
}

/// One element of an instant vector: its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorSample {
    /// The labels the query kept.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN` where Prometheus answers it, e.g. a quantile without observations).
    pub value: f64,
}

/// Why asking Prometheus failed, naming the URL and the query.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// The URL cannot be used.
    #[error("--prometheus {url}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A query failed: unreachable, an HTTP error, `status: error`, or an answer not understood.
    #[error("Prometheus at {url}: query `{query}`: {reason}")]
    Query {
        /// The server.
        url: String,
        /// The PromQL expression.
        query: String,
        /// Why it failed.
        reason: String,
    },
}

/// The queries of a stat of `resource` (in `namespace`, of the object `name`, when given)
/// over `window`: one per [`Measure`], each grouped by the labels that name a row, so their
/// number does not grow with the rows.
pub fn queries(
    resource: Resource,
    namespace: Option<&str>,
    name: Option<&str>,
    window: Duration,
) -> Vec<Query> {
    let (ns_label, name_label) = resource.labels();
    let group = match name_label {
        Some(name_label) => format!("{name_label}, {ns_label}"),
        None => ns_label.to_owned(),
    };
    let mut wanted = Vec::new();
    if let Some(ns) = namespace {
        wanted.push((ns_label, "=", ns));
    }
    if let (Some(label), Some(name)) = (name_label, name) {
        wanted.push((label, "=", name));
    }
    let over = range(window);
    let select = |first: (&str, &str, &str), extra: &[(&str, &str, &str)]| {
        let mut matchers = vec![first];
        matchers.extend_from_slice(&wanted);
        matchers.extend_from_slice(extra);
        selector(&matchers)
    };
    let requests = select(REQUEST_REPORTERS, &[]);
    let successes = select(REQUEST_REPORTERS, &[("response_code", "!~", "5.*")]);
    let tcp = select(TCP_REPORTER, &[]);
    let mutual_tls = select(
        TCP_REPORTER,
        &[("connection_security_policy", "=", "mutual_tls")],
    );
    let summed = |function: &str, metric: &str, matchers: &str| {
        format!("sum by ({group}) ({function}({metric}{matchers}[{over}]))")
    };
    let latency = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by ({group}, le) \
             (rate(istio_request_duration_milliseconds_bucket{requests}[{over}])))"
        )
    };
    let current = |metric: &str| format!("sum by ({group}) ({metric}{tcp})");
    [
        (
            Measure::Requests,
            summed("increase", "istio_requests_total", &requests),
        ),
        (
            Measure::Successes,
            summed("increase", "istio_requests_total", &successes),
        ),
        (Measure::LatencyP50, latency("0.5")),
        (Measure::LatencyP95, latency("0.95")),
        (Measure::LatencyP99, latency("0.99")),
        (
            Measure::TcpOpened,
            summed("increase", "istio_tcp_connections_opened_total", &tcp),
        ),
        (
            Measure::TcpOpenedMutualTls,
            summed(
                "increase",
                "istio_tcp_connections_opened_total",
                &mutual_tls,
            ),
        ),
        (
            Measure::TcpOpenedEver,
            current("istio_tcp_connections_opened_total"),
        ),
        (
            Measure::TcpClosedEver,
            current("istio_tcp_connections_closed_total"),
        ),
        (
            Measure::ReadBytesPerSecond,
            summed("rate", "istio_tcp_received_bytes_total", &tcp),
        ),
        (
            Measure::WriteBytesPerSecond,
            summed("rate", "istio_tcp_sent_bytes_total", &tcp),
        ),
    ]
    .into_iter()
    .map(|(measure, promql)| Query { measure, promql })
    .collect()
}

/// A PromQL range duration: whole seconds as `30s`, anything finer in milliseconds.
fn range(window: Duration) -> String {
    match window.subsec_millis() {
        0 => format!("{}s", window.as_secs()),
        _ => format!("{}ms", window.as_millis()),
    }
}

/// `{a="x",b=~"y"}`, values quoted as PromQL strings.
fn selector(matchers: &[(&str, &str, &str)]) -> String {
    let parts: Vec<String> = matchers
        .iter()
        .map(|(label, op, value)| {
            let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{label}{op}\"{quoted}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// An answer of `/api/v1/query` as Prometheus writes it.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct AnswerData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct AnswerSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// `[unix time, "value"]`.
    value: (f64, String),
}

/// The instant vector of an answer, or why there is none: Prometheus's own error (`status:
/// error`), another result type, or JSON that is not an answer.
pub fn parse_vector(body: &str) -> Result<Vec<VectorSample>, String> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| format!("not a Prometheus answer ({e})"))?;
    if answer.status != "success" {
        return Err(format!(
            "{}: {}",
            answer.error_type.as_deref().unwrap_or(&answer.status),
            answer.error.as_deref().unwrap_or("no reason given")
        ));
    }
    let data = answer
        .data
        .ok_or_else(|| "a successful answer without data".to_owned())?;
    if data.result_type != "vector" {
        return Err(format!(
            "a {} where an instant vector was expected",
            data.result_type
        ));
    }
    let samples: Vec<AnswerSample> = serde_json::from_value(data.result)
        .map_err(|e| format!("an instant vector not understood ({e})"))?;
    samples
        .into_iter()
        .map(|s| {
            Ok(VectorSample {
                value: parse_value(&s.value.1)?,
                labels: s.metric,
            })
        })
        .collect()
}

/// A sample value as Prometheus writes it: a number, `NaN`, `+Inf` or `-Inf`.
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse()
            .map_err(|_| format!("sample value {text:?} is not a number")),
    }
}

/// The rows of `targets` from the answers of [`queries`] (`window` the range they used).
pub fn rows(
    resource: Resource,
    targets: &[Target],
    answers: &BTreeMap<Measure, Vec<VectorSample>>,
    window: Duration,
) -> Vec<Row> {
    let (ns_label, name_label) = resource.labels();
    let seconds = window.as_secs_f64();
    targets
        .iter()
        .map(|target| {
            let value = |measure: Measure| {
                answers.get(&measure)?.iter().find_map(|s| {
                    let mine = s.labels.get(ns_label) == Some(&target.namespace)
                        && name_label.is_none_or(|l| s.labels.get(l) == Some(&target.name));
                    mine.then_some(s.value)
                })
            };
            let number = |measure| value(measure).filter(|v| v.is_finite());
            let requests = number(Measure::Requests);
            let served = requests.is_some();
            let latency = |measure| number(measure).filter(|_| served);
            let opened = number(Measure::TcpOpened).unwrap_or(0.0);
            let open_now = number(Measure::TcpOpenedEver).unwrap_or(0.0)
                - number(Measure::TcpClosedEver).unwrap_or(0.0);
            Row {
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                meshed_pods: target.meshed_pods,
                pods: target.pods,
                requests: requests.map(|r| r.round() as u64),
                success_rate: requests.filter(|r| *r > 0.0).map(|r| {
                    // A window of failures only has no series of successes to answer.
                    number(Measure::Successes).unwrap_or(0.0).min(r) / r
                }),
                requests_per_second: requests
                    .map(|r| if seconds > 0.0 { r / seconds } else { 0.0 }),
                latency_ms_p50: latency(Measure::LatencyP50),
                latency_ms_p95: latency(Measure::LatencyP95),
                latency_ms_p99: latency(Measure::LatencyP99),
                tcp_connections: open_now.max(0.0).round() as u64,
                tcp_opened: opened.round() as u64,
                read_bytes_per_second: number(Measure::ReadBytesPerSecond).unwrap_or(0.0),
                write_bytes_per_second: number(Measure::WriteBytesPerSecond).unwrap_or(0.0),
                mtls_share: (opened > 0.0).then(|| {
                    number(Measure::TcpOpenedMutualTls)
                        .unwrap_or(0.0)
                        .min(opened)
                        / opened
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            namespace: "shop".into(),
            name: name.into(),
            meshed_pods: 1,
            pods: 1,
        }
    }

    /// An answer as Prometheus writes it, for the orders deployment (and others).
    fn vector(samples: &[(&str, &str)]) -> Vec<VectorSample> {
        let result: Vec<String> = samples
            .iter()
            .map(|(workload, value)| {
                format!(
                    r#"{{"metric":{{"destination_workload":"{workload}","destination_workload_namespace":"shop"}},"value":[1765070000.123,"{value}"]}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            result.join(",")
        );
        parse_vector(&body).expect("a vector")
    }

    fn promql(resource: Resource, ns: Option<&str>, name: Option<&str>, m: Measure) -> String {
        queries(resource, ns, name, Duration::from_secs(30))
            .into_iter()
            .find(|q| q.measure == m)
            .map(|q| q.promql)
            .unwrap()
    }

    #[test]
    fn queries_are_the_dashboards_grouped_by_the_rows_labels() {
        let deploy = |m| promql(Resource::Deployment, Some("shop"), None, m);
        assert_eq!(
            deploy(Measure::Requests),
            "sum by (destination_workload, destination_workload_namespace) \
             (increase(istio_requests_total{reporter=~\"destination|waypoint\",\
             destination_workload_namespace=\"shop\"}[30s]))"
        );
        assert_eq!(
            deploy(Measure::Successes),
            "sum by (destination_workload, destination_workload_namespace) \
             (increase(istio_requests_total{reporter=~\"destination|waypoint\",\
             destination_workload_namespace=\"shop\",response_code!~\"5.*\"}[30s]))"
        );
        assert_eq!(
            deploy(Measure::LatencyP99),
            "histogram_quantile(0.99, sum by (destination_workload, \
             destination_workload_namespace, le) \
             (rate(istio_request_duration_milliseconds_bucket{reporter=~\"destination|waypoint\",\
             destination_workload_namespace=\"shop\"}[30s])))"
        );
        assert_eq!(
            deploy(Measure::TcpOpenedMutualTls),
            "sum by (destination_workload, destination_workload_namespace) \
             (increase(istio_tcp_connections_opened_total{reporter=\"destination\",\
             destination_workload_namespace=\"shop\",\
             connection_security_policy=\"mutual_tls\"}[30s]))"
        );
        assert_eq!(
            deploy(Measure::TcpClosedEver),
            "sum by (destination_workload, destination_workload_namespace) \
             (istio_tcp_connections_closed_total{reporter=\"destination\",\
             destination_workload_namespace=\"shop\"})"
        );
        assert_eq!(
            promql(
                Resource::Service,
                Some("shop"),
                Some("orders"),
                Measure::ReadBytesPerSecond
            ),
            "sum by (destination_service_name, destination_service_namespace) \
             (rate(istio_tcp_received_bytes_total{reporter=\"destination\",\
             destination_service_namespace=\"shop\",destination_service_name=\"orders\"}[30s]))"
        );
        assert_eq!(
            promql(Resource::Namespace, None, None, Measure::Requests),
            "sum by (destination_workload_namespace) (increase(istio_requests_total\
             {reporter=~\"destination|waypoint\"}[30s]))"
        );
        assert_eq!(
            queries(Resource::Service, None, None, Duration::ZERO).len(),
            11
        );
    }

    #[test]
    fn ranges_and_label_values_are_written_as_promql_reads_them() {
        assert_eq!(range(Duration::from_secs(600)), "600s");
        assert_eq!(range(Duration::from_millis(1500)), "1500ms");
        assert_eq!(selector(&[("a", "=", r#"x"y\z"#)]), r#"{a="x\"y\\z"}"#);
    }

    #[test]
    fn answers_parse_to_vectors_and_errors_name_prometheuss_reason() {
        let nan = vector(&[("orders", "NaN"), ("cache", "+Inf")]);
        assert!(nan[0].value.is_nan());
        assert_eq!(nan[1].value, f64::INFINITY);
        assert_eq!(nan[0].labels["destination_workload"], "orders");
        let refused = parse_vector(
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#,
        );
        assert_eq!(
            refused.unwrap_err(),
            "bad_data: 1:5: parse error: unexpected"
        );
        let matrix =
            parse_vector(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#);
        assert_eq!(
            matrix.unwrap_err(),
            "a matrix where an instant vector was expected"
        );
        assert!(
            parse_vector("<html>404</html>")
                .unwrap_err()
                .starts_with("not a Prometheus answer")
        );
        let bad_value = parse_vector(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"many"]}]}}"#,
        );
        assert_eq!(
            bad_value.unwrap_err(),
            "sample value \"many\" is not a number"
        );
        let empty =
            parse_vector(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#);
        assert_eq!(empty.unwrap(), []);
    }

    #[test]
    fn rows_take_each_measure_from_the_sample_of_their_labels() {
        let answers = BTreeMap::from([
            (
                Measure::Requests,
                vector(&[("orders", "100.25"), ("other", "7")]),
            ),
            (Measure::Successes, vector(&[("orders", "75.1875")])),
            (Measure::LatencyP50, vector(&[("orders", "1")])),
            (Measure::LatencyP95, vector(&[("orders", "7.5")])),
            (Measure::LatencyP99, vector(&[("orders", "9.5")])),
            (Measure::TcpOpened, vector(&[("orders", "4")])),
            (Measure::TcpOpenedMutualTls, vector(&[("orders", "3")])),
            (Measure::TcpOpenedEver, vector(&[("orders", "12")])),
            (Measure::TcpClosedEver, vector(&[("orders", "10")])),
            (Measure::ReadBytesPerSecond, vector(&[("orders", "400")])),
            (Measure::WriteBytesPerSecond, vector(&[("orders", "800")])),
        ]);
        let found = rows(
            Resource::Deployment,
            &[target("orders"), target("cache")],
            &answers,
            Duration::from_secs(4),
        );
        // Prometheus's extrapolated counts are rounded; rates keep the fraction.
        let orders = &found[0];
        assert_eq!(orders.requests, Some(100));
        assert_eq!(orders.success_rate, Some(0.75));
        assert_eq!(orders.requests_per_second, Some(25.0625));
        assert_eq!(
            (
                orders.latency_ms_p50,
                orders.latency_ms_p95,
                orders.latency_ms_p99
            ),
            (Some(1.0), Some(7.5), Some(9.5))
        );
        assert_eq!((orders.tcp_opened, orders.tcp_connections), (4, 2));
        assert_eq!(orders.mtls_share, Some(0.75));
        assert_eq!(
            (orders.read_bytes_per_second, orders.write_bytes_per_second),
            (400.0, 800.0)
        );
        // No series names the cache: no request figures, and none invented.
        let cache = &found[1];
        assert_eq!(
            (cache.requests, cache.success_rate, cache.latency_ms_p50),
            (None, None, None)
        );
        assert_eq!((cache.tcp_connections, cache.mtls_share), (0, None));
    }

    #[test]
    fn failures_only_quiet_windows_and_namespaces() {
        let answers = BTreeMap::from([
            (
                Measure::Requests,
                vector(&[("orders", "20"), ("idle", "0")]),
            ),
            (
                Measure::LatencyP50,
                vector(&[("orders", "3"), ("idle", "NaN")]),
            ),
        ]);
        let found = rows(
            Resource::Deployment,
            &[target("orders"), target("idle")],
            &answers,
            Duration::from_secs(10),
        );
        assert_eq!(found[0].success_rate, Some(0.0));
        // Served in the window's series, but nothing asked: zero requests, no rate, no latency.
        assert_eq!(
            (
                found[1].requests,
                found[1].success_rate,
                found[1].latency_ms_p50
            ),
            (Some(0), None, None)
        );
        let by_namespace = rows(
            Resource::Namespace,
            &[target("shop")],
            &answers,
            Duration::from_secs(10),
        );
        assert_eq!(by_namespace[0].requests, Some(20));
    }
}
