//! `meshctl stat`: the golden metrics of each workload, service or namespace, from two scrapes
//! of every proxy's `/metrics` a window apart, computed from Istio's standard metrics as
//! Istio's dashboards compute them: requests, success rate and latency from the waypoints'
//! `istio_requests_total` and `istio_request_duration_milliseconds`, connections and bytes from
//! what the ztunnels report as destination (`istio_tcp_*{reporter="destination"}`). The same
//! in both modes: each gathers its rows' [`Target`]s and the proxies' samples its own way.

use std::collections::BTreeMap;

use prometheus_registry::scrape::Sample;
use serde::Serialize;

/// The label that puts a namespace or a pod in (`ambient`) or out (`none`) of the mesh.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// What the rows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Deployments (Istio's workloads).
    Deployment,
    /// Services.
    Service,
    /// Namespaces.
    Namespace,
}

impl Resource {
    /// Parses kubectl's names: `deploy`, `svc`, `ns` and their long forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "deploy" | "deployment" | "deployments" => Ok(Self::Deployment),
            "svc" | "service" | "services" => Ok(Self::Service),
            "ns" | "namespace" | "namespaces" => Ok(Self::Namespace),
            "po" | "pod" | "pods" => Err("pods: Istio's standard metrics name workloads, not \
                                          pods; use `stat deploy`"
                .to_owned()),
            other => Err(format!("{other}: use deploy, svc or ns")),
        }
    }

    /// The destination labels that name a row: its namespace, and its name (none for
    /// namespaces).
    pub fn labels(self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Deployment => (
                "destination_workload_namespace",
                Some("destination_workload"),
            ),
            Self::Service => (
                "destination_service_namespace",
                Some("destination_service_name"),
            ),
            Self::Namespace => ("destination_workload_namespace", None),
        }
    }
}

/// A row to compute: what it is and how many of its pods are meshed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Namespace (the name itself for namespaces).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods in the mesh.
    pub meshed_pods: usize,
    /// Pods.
    pub pods: usize,
}

impl Target {
    /// The row `namespace`/`name` over `pods`, each given as whether it is in the mesh.
    pub fn new(namespace: &str, name: &str, pods: impl IntoIterator<Item = bool>) -> Self {
        let (mut meshed_pods, mut all) = (0, 0);
        for meshed in pods {
            all += 1;
            meshed_pods += usize::from(meshed);
        }
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            meshed_pods,
            pods: all,
        }
    }
}

/// Whether a pod is in the mesh, from the `istio.io/dataplane-mode` labels of the pod and of
/// its namespace: the pod's own label decides (`none` opts it out), else its namespace's.
pub fn meshed(pod_mode: Option<&str>, namespace_mode: Option<&str>) -> bool {
    pod_mode.or(namespace_mode) == Some("ambient")
}

/// Sorts rows' targets by namespace, then name, as `stat` lists them.
pub fn sorted(mut targets: Vec<Target>) -> Vec<Target> {
    targets.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    targets
}

/// The golden metrics of one row over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Pods in the mesh.
    pub meshed_pods: usize,
    /// Pods.
    pub pods: usize,
    /// Requests that waypoints served in the window; `None` when no waypoint serves it.
    pub requests: Option<u64>,
    /// Share of those that did not fail (not 5xx), from 0 to 1.
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub requests_per_second: Option<f64>,
    /// Median request latency, milliseconds (histogram estimate, as `histogram_quantile`).
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile latency, milliseconds.
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub latency_ms_p99: Option<f64>,
    /// TCP connections open at the end of the window.
    pub tcp_connections: u64,
    /// TCP connections opened in the window.
    pub tcp_opened: u64,
    /// Bytes per second the destination received.
    pub read_bytes_per_second: f64,
    /// Bytes per second the destination sent.
    pub write_bytes_per_second: f64,
    /// Share of the connections opened in the window that were mutual TLS, from 0 to 1.
    pub mtls_share: Option<f64>,
}

/// Who talked to whom in the window, as the ztunnels saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    /// The client's namespace.
    pub source_namespace: String,
    /// The client's workload (`unknown` when the mesh does not know it).
    pub source: String,
    /// The client's SPIFFE identity as the mesh verified it; `unknown` without mutual TLS.
    pub source_identity: String,
    /// The server's namespace.
    pub destination_namespace: String,
    /// The server's workload.
    pub destination: String,
    /// The server's SPIFFE identity.
    pub destination_identity: String,
    /// Whether the connections were mutual TLS.
    pub secured: bool,
    /// Connections opened in the window.
    pub connections: u64,
}

/// The edges of the window from `increase` (every proxy's): each (client, server, mutual TLS
/// or not) pair with its connections, as the server's ztunnel reported them, or the client's
/// when the server has none; only pairs with a side in `namespace` (all when `None`).
pub fn edges(increase: &[Sample], namespace: Option<&str>) -> Vec<Edge> {
    let opened = |reporter: &'static str| {
        increase.iter().filter(move |s| {
            s.name == "istio_tcp_connections_opened_total"
                && s.label("reporter") == reporter
                && s.value > 0.0
        })
    };
    let mut found: BTreeMap<Edge, u64> = BTreeMap::new();
    for s in opened("destination") {
        count_edge(&mut found, s);
    }
    // A server outside the mesh has no ztunnel to report it: its client's ztunnel does.
    let served: Vec<(String, String)> = found
        .keys()
        .map(|e| (e.destination_namespace.clone(), e.destination.clone()))
        .collect();
    for s in opened("source") {
        let server = (
            s.label("destination_workload_namespace").to_owned(),
            s.label("destination_workload").to_owned(),
        );
        if !served.contains(&server) {
            count_edge(&mut found, s);
        }
    }
    found
        .into_iter()
        .map(|(edge, connections)| Edge {
            connections,
            ..edge
        })
        .filter(|e| {
            namespace.is_none_or(|ns| e.source_namespace == ns || e.destination_namespace == ns)
        })
        .collect()
}

/// Adds the connections of `s` to its edge.
fn count_edge(found: &mut BTreeMap<Edge, u64>, s: &Sample) {
    let text = |label: &str| match s.label(label) {
        "" => "unknown".to_owned(),
        value => value.to_owned(),
    };
    let edge = Edge {
        source_namespace: text("source_workload_namespace"),
        source: text("source_workload"),
        source_identity: text("source_principal"),
        destination_namespace: text("destination_workload_namespace"),
        destination: text("destination_workload"),
        destination_identity: text("destination_principal"),
        secured: s.label("connection_security_policy") == "mutual_tls",
        connections: 0,
    };
    *found.entry(edge).or_default() += s.value as u64;
}

/// What each counter grew by between two scrapes of one proxy (a counter that went down was
/// reset by a restart: all of its value is new).
pub fn increase(before: &[Sample], after: &[Sample]) -> Vec<Sample> {
    let key = |s: &Sample| (s.name.clone(), s.labels.clone());
    let earlier: BTreeMap<_, f64> = before.iter().map(|s| (key(s), s.value)).collect();
    after
        .iter()
        .map(|s| {
            let old = earlier.get(&key(s)).copied().unwrap_or(0.0);
            let value = if s.value >= old {
                s.value - old
            } else {
                s.value
            };
            Sample { value, ..s.clone() }
        })
        .collect()
}

/// The rows of `targets`: `increase` over the window (every proxy's, concatenated), `now` the
/// samples of the second scrapes (for gauges computed from counters), `seconds` the window.
pub fn rows(
    resource: Resource,
    targets: &[Target],
    increase: &[Sample],
    now: &[Sample],
    seconds: f64,
) -> Vec<Row> {
    targets
        .iter()
        .map(|target| {
            let (ns_label, name_label) = resource.labels();
            let mine = |s: &&Sample| {
                s.label(ns_label) == target.namespace
                    && name_label.is_none_or(|l| s.label(l) == target.name)
            };
            let grown: Vec<&Sample> = increase.iter().filter(mine).collect();
            let current: Vec<&Sample> = now.iter().filter(mine).collect();
            row(target, &grown, &current, seconds)
        })
        .collect()
}

fn row(target: &Target, grown: &[&Sample], now: &[&Sample], seconds: f64) -> Row {
    // Folded from +0.0: an empty `sum` of floats is -0.0, which would print as such.
    let total = |samples: &[&Sample], name: &str, filter: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name && s.has(filter))
            .fold(0.0, |sum, s| sum + s.value)
    };
    let served = grown.iter().any(|s| s.name == "istio_requests_total")
        || now.iter().any(|s| s.name == "istio_requests_total");
    let requests = total(grown, "istio_requests_total", &[]);
    let failed = grown
        .iter()
        .filter(|s| s.name == "istio_requests_total" && s.label("response_code").starts_with('5'))
        .fold(0.0, |sum, s| sum + s.value);
    let latency = |q| {
        served
            .then(|| quantile(q, grown, DURATION_BUCKETS))
            .flatten()
    };
    let destination = [("reporter", "destination")];
    let opened = total(grown, "istio_tcp_connections_opened_total", &destination);
    let mtls = total(
        grown,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    let open_now = total(now, "istio_tcp_connections_opened_total", &destination)
        - total(now, "istio_tcp_connections_closed_total", &destination);
    let per_second = |value: f64| if seconds > 0.0 { value / seconds } else { 0.0 };
    Row {
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        meshed_pods: target.meshed_pods,
        pods: target.pods,
        requests: served.then_some(requests as u64),
        success_rate: (requests > 0.0).then(|| (requests - failed) / requests),
        requests_per_second: served.then(|| per_second(requests)),
        latency_ms_p50: latency(0.5),
        latency_ms_p95: latency(0.95),
        latency_ms_p99: latency(0.99),
        tcp_connections: open_now.max(0.0) as u64,
        tcp_opened: opened as u64,
        read_bytes_per_second: per_second(total(
            grown,
            "istio_tcp_received_bytes_total",
            &destination,
        )),
        write_bytes_per_second: per_second(total(
            grown,
            "istio_tcp_sent_bytes_total",
            &destination,
        )),
        mtls_share: (opened > 0.0).then(|| mtls / opened),
    }
}

/// The buckets of Istio's request durations, in milliseconds.
const DURATION_BUCKETS: &str = "istio_request_duration_milliseconds_bucket";

/// The `q` quantile of the histogram whose `_bucket` samples are named `buckets` in
/// `samples`, estimated as Prometheus' `histogram_quantile` does (linear within a bucket; the
/// highest finite bound when it falls in the `+Inf` bucket), in the histogram's unit; `None`
/// without observations.
pub fn quantile(q: f64, samples: &[&Sample], buckets: &str) -> Option<f64> {
    let mut counts: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples {
        if s.name != buckets {
            continue;
        }
        let bound = match s.label("le") {
            "+Inf" => f64::INFINITY,
            text => match text.parse::<f64>() {
                Ok(bound) => bound,
                Err(_) => continue,
            },
        };
        // Keyed by the bound's bits: positive floats sort as their bits do.
        counts.entry(bound.to_bits()).or_insert((bound, 0.0)).1 += s.value;
    }
    let total = counts.values().last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in counts.into_values() {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let within = if count > below {
                (rank - below) / (count - below)
            } else {
                0.0
            };
            return Some(lower + (bound - lower) * within);
        }
        (lower, below) = (bound, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: [(&str, &str); 3] = [
        ("destination_workload", "orders"),
        ("destination_workload_namespace", "shop"),
        ("reporter", "destination"),
    ];

    fn requests(code: &str, value: f64) -> Sample {
        let mut labels = ORDERS.to_vec();
        labels[2] = ("reporter", "waypoint");
        labels.push(("response_code", code));
        Sample::new("istio_requests_total", &labels, value)
    }

    fn bucket(le: &str, value: f64) -> Sample {
        let mut labels = ORDERS.to_vec();
        labels.push(("le", le));
        Sample::new("istio_request_duration_milliseconds_bucket", &labels, value)
    }

    #[test]
    fn increase_subtracts_the_first_scrape_and_survives_a_reset() {
        let before = [requests("200", 10.0), requests("503", 5.0)];
        let after = [
            requests("200", 15.0),
            requests("503", 2.0),
            requests("404", 1.0),
        ];
        let grown: Vec<f64> = increase(&before, &after).iter().map(|s| s.value).collect();
        assert_eq!(grown, [5.0, 2.0, 1.0]);
    }

    #[test]
    fn a_row_adds_up_requests_failures_latency_and_connections() {
        let mut tcp = ORDERS.to_vec();
        tcp.push(("connection_security_policy", "mutual_tls"));
        let mut plain = ORDERS.to_vec();
        plain.push(("connection_security_policy", "unknown"));
        let grown = [
            requests("200", 90.0),
            requests("503", 10.0),
            bucket("1", 50.0),
            bucket("5", 90.0),
            bucket("10", 100.0),
            bucket("+Inf", 100.0),
            Sample::new("istio_tcp_connections_opened_total", &tcp, 3.0),
            Sample::new("istio_tcp_connections_opened_total", &plain, 1.0),
            Sample::new("istio_tcp_received_bytes_total", &tcp, 4000.0),
            Sample::new("istio_tcp_sent_bytes_total", &tcp, 8000.0),
            // Another workload's, and what the source side reports: not counted.
            Sample::new(
                "istio_tcp_connections_opened_total",
                &[("reporter", "destination")],
                7.0,
            ),
            Sample::new(
                "istio_tcp_connections_opened_total",
                &[
                    ("destination_workload", "orders"),
                    ("destination_workload_namespace", "shop"),
                    ("reporter", "source"),
                ],
                9.0,
            ),
        ];
        let now = [
            Sample::new("istio_tcp_connections_opened_total", &tcp, 12.0),
            Sample::new("istio_tcp_connections_closed_total", &tcp, 10.0),
        ];
        let target = Target {
            namespace: "shop".into(),
            name: "orders".into(),
            meshed_pods: 2,
            pods: 2,
        };
        let rows = rows(Resource::Deployment, &[target], &grown, &now, 10.0);
        let row = &rows[0];
        assert_eq!(row.requests, Some(100));
        assert_eq!(row.success_rate, Some(0.9));
        assert_eq!(row.requests_per_second, Some(10.0));
        assert_eq!(row.latency_ms_p50, Some(1.0));
        assert_eq!(row.latency_ms_p95, Some(7.5));
        assert_eq!(row.latency_ms_p99, Some(9.5));
        assert_eq!((row.tcp_opened, row.tcp_connections), (4, 2));
        assert_eq!(row.mtls_share, Some(0.75));
        assert_eq!(row.read_bytes_per_second, 400.0);
        assert_eq!(row.write_bytes_per_second, 800.0);
    }

    #[test]
    fn without_a_waypoint_there_are_no_request_figures() {
        let target = Target {
            namespace: "shop".into(),
            name: "cache".into(),
            meshed_pods: 1,
            pods: 1,
        };
        let row = &rows(Resource::Deployment, &[target], &[], &[], 10.0)[0];
        assert_eq!(row.requests, None);
        assert_eq!(row.latency_ms_p50, None);
        assert_eq!(row.mtls_share, None);
        assert_eq!(row.tcp_connections, 0);
    }

    #[test]
    fn latency_in_the_infinite_bucket_is_the_highest_bound() {
        let grown = [bucket("1", 0.0), bucket("5", 1.0), bucket("+Inf", 10.0)];
        let refs: Vec<&Sample> = grown.iter().collect();
        assert_eq!(quantile(0.99, &refs, DURATION_BUCKETS), Some(5.0));
        assert_eq!(quantile(0.05, &refs, DURATION_BUCKETS), Some(3.0));
        assert_eq!(quantile(0.5, &[], DURATION_BUCKETS), None);
    }

    #[test]
    fn edges_come_from_the_servers_side_and_the_clients_when_the_server_has_none() {
        let edge = |reporter, src: &str, dst: &str, mtls: bool, value| {
            let policy = if mtls { "mutual_tls" } else { "unknown" };
            let src_principal = if mtls {
                format!("spiffe://cluster.local/ns/shop/sa/{src}")
            } else {
                String::new()
            };
            Sample::new(
                "istio_tcp_connections_opened_total",
                &[
                    ("reporter", reporter),
                    ("source_workload", src),
                    ("source_workload_namespace", "shop"),
                    ("source_principal", &src_principal),
                    ("destination_workload", dst),
                    ("destination_workload_namespace", "shop"),
                    (
                        "destination_principal",
                        "spiffe://cluster.local/ns/shop/sa/x",
                    ),
                    ("connection_security_policy", policy),
                ],
                value,
            )
        };
        let grown = [
            edge("destination", "frontend", "orders", true, 3.0),
            edge("source", "frontend", "orders", true, 3.0),
            edge("destination", "", "frontend", false, 2.0),
            edge("source", "orders", "legacy", false, 1.0),
            edge("destination", "orders", "payments", true, 0.0),
        ];
        let found = edges(&grown, Some("shop"));
        let pairs: Vec<(&str, &str, bool, u64)> = found
            .iter()
            .map(|e| {
                (
                    e.source.as_str(),
                    e.destination.as_str(),
                    e.secured,
                    e.connections,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("frontend", "orders", true, 3),
                ("orders", "legacy", false, 1),
                ("unknown", "frontend", false, 2),
            ]
        );
        assert_eq!(
            found[0].source_identity,
            "spiffe://cluster.local/ns/shop/sa/frontend"
        );
        assert_eq!(found[2].source_identity, "unknown");
        assert!(edges(&grown, Some("elsewhere")).is_empty());
    }

    #[test]
    fn resources_read_kubectls_names() {
        assert_eq!(Resource::parse("deploy"), Ok(Resource::Deployment));
        assert_eq!(Resource::parse("svc"), Ok(Resource::Service));
        assert_eq!(Resource::parse("namespaces"), Ok(Resource::Namespace));
        assert!(
            Resource::parse("po")
                .unwrap_err()
                .contains("workloads, not pods")
        );
        assert!(Resource::parse("cm").is_err());
    }

    #[test]
    fn a_pods_own_label_decides_before_its_namespaces() {
        assert!(meshed(None, Some("ambient")));
        assert!(!meshed(Some("none"), Some("ambient")));
        assert!(meshed(Some("ambient"), None));
        assert!(!meshed(None, None));
        let target = Target::new("shop", "orders", [true, false, true]);
        assert_eq!((target.meshed_pods, target.pods), (2, 3));
    }
}
