//! Per-route request metrics, with the names and labels Linkerd's proxy documents for its
//! outbound route metrics: `outbound_http_route_request_statuses_total` (a counter per
//! route, `http_status` and `error`) and `outbound_http_route_request_duration_seconds` (a
//! histogram per route). Istio's request metrics carry no route label and must not grow one,
//! so routes are counted here, beside them.
//!
//! Every label set a request needs is built when its config is compiled: a route's labels
//! (`parent_*` for its service, `route_*` for the object that made it) are rendered once and
//! its duration histogram is looked up once, then held by the compiled route
//! ([`RouteTelemetry`]). Recording a request is one lookup of its `(route, status, error)`
//! counter and a few relaxed atomic additions; nothing is allocated.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_registry::{Histogram, Registry, Series, text};

const STATUSES: &str = "outbound_http_route_request_statuses_total";
const DURATION: &str = "outbound_http_route_request_duration_seconds";
const OVERFLOW: &str = "waypoint_route_metrics_series_overflow_total";

/// Envoy's default buckets (those of `istio_request_duration_milliseconds`) in seconds, so
/// route latencies are as precise as the service's; Linkerd's own coarser bounds (0.05, 0.5,
/// 1, 10) are among them.
const BUCKETS: [f64; 19] = [
    0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0, 1800.0, 3600.0,
];

/// Sums are kept in nanoseconds.
const SUM_SCALE: f64 = 1e9;

/// Linkerd's `route_kind` (with empty group, namespace) and `route_name` of the route that
/// takes requests no configured route names: the default route.
const DEFAULT_KIND: &str = "default";
const DEFAULT_NAME: &str = "http";

/// The label values of one route, in Linkerd's order: `parent_namespace`, `parent_name`,
/// `route_group`, `route_kind`, `route_namespace`, `route_name` (the parent is always a core
/// Service).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteKey([Box<str>; 6]);

impl RouteKey {
    /// The route `rule` (its name within its source object) of service `parent_name` in
    /// `parent_namespace`, made by the object of `kind` in `namespace`; an empty `rule` is the
    /// service's default route, whatever made it.
    pub(crate) fn new(
        parent_namespace: &str,
        parent_name: &str,
        kind: &str,
        namespace: &str,
        rule: &str,
    ) -> Self {
        let (group, kind, namespace, name) = if rule.is_empty() {
            ("", DEFAULT_KIND, "", DEFAULT_NAME)
        } else {
            (api_group(kind), kind, namespace, rule)
        };
        Self([
            parent_namespace.into(),
            parent_name.into(),
            group.into(),
            kind.into(),
            namespace.into(),
            name.into(),
        ])
    }

    /// The default route of service `parent_name` in `parent_namespace`: requests no route
    /// matched, or refused before routing (authorization, rate limit).
    pub(crate) fn default_of(parent_namespace: &str, parent_name: &str) -> Self {
        Self::new(parent_namespace, parent_name, "", "", "")
    }

    /// `parent_group="core",parent_kind="Service",...,route_name="..."`, without braces.
    fn render(&self) -> String {
        let [parent_namespace, parent_name, group, kind, namespace, name] = &self.0;
        let labels = text::render_labels(&[
            ("parent_group", "core", ""),
            ("parent_kind", "Service", ""),
            ("parent_namespace", parent_namespace, ""),
            ("parent_name", parent_name, ""),
            ("route_group", group, ""),
            ("route_kind", kind, ""),
            ("route_namespace", namespace, ""),
            ("route_name", name, ""),
        ]);
        labels[1..labels.len() - 1].to_owned()
    }
}

/// The API group of the route objects the controller translates (Linkerd's copies of the
/// Gateway API routes are reported under the Gateway API's group: the controller does not
/// tell them apart).
fn api_group(kind: &str) -> &'static str {
    match kind {
        "HTTPRoute" | "GRPCRoute" => "gateway.networking.k8s.io",
        "VirtualService" => "networking.istio.io",
        "ServiceProfile" => "linkerd.io",
        "TrafficSplit" => "split.smi-spec.io",
        _ => "",
    }
}

/// The values of one route's series.
#[derive(Debug)]
struct RouteSeries {
    duration: Histogram<{ BUCKETS.len() }>,
}

impl Default for RouteSeries {
    fn default() -> Self {
        Self {
            duration: Histogram::new(&BUCKETS, SUM_SCALE),
        }
    }
}

/// How a request ended, as Linkerd's `error` label says it: empty when a response was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RouteError {
    /// A response (of any status) was sent.
    None,
    /// The client left before any response (response code 0).
    Cancel,
}

impl RouteError {
    fn as_str(self) -> &'static str {
        match self {
            RouteError::None => "",
            RouteError::Cancel => "CANCEL",
        }
    }
}

/// One counter of `outbound_http_route_request_statuses_total`: a route (by the address of
/// its series, which the registry keeps for its whole life, so it names one label set) with
/// a status and an error. Copied, hashed and compared without touching the label text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StatusKey {
    route: usize,
    http_status: u16,
    error: RouteError,
}

/// What a compiled route holds for its telemetry.
#[derive(Debug)]
pub(crate) struct RouteTelemetry {
    /// The route's name as the access log and `meshctl tap` show it ("" for requests no
    /// route matched).
    pub name: Arc<str>,
    /// Its series, `None` when the registry was full (its requests are then not counted).
    series: Option<Arc<Series<RouteSeries>>>,
}

impl RouteTelemetry {
    /// A route whose requests are not counted, for tests of what only reads its name.
    #[cfg(test)]
    pub(crate) fn uncounted(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            series: None,
        })
    }
}

/// The per-route metrics of one waypoint.
#[derive(Default)]
pub(crate) struct RouteMetrics {
    routes: Registry<RouteKey, RouteSeries>,
    statuses: Registry<StatusKey, AtomicU64>,
}

impl RouteMetrics {
    /// The telemetry of the route `key` named `name`: its label set, rendered when first
    /// seen and kept across config versions so that its counters only grow.
    pub(crate) fn route(&self, key: &RouteKey, name: &str) -> Arc<RouteTelemetry> {
        Arc::new(RouteTelemetry {
            name: name.into(),
            series: self.routes.get(key, RouteKey::render),
        })
    }

    /// Counts one finished request of `route`, answered with `code` (0: never answered)
    /// after `duration`.
    pub(crate) fn record(&self, route: &RouteTelemetry, code: u16, duration: Duration) {
        let Some(series) = &route.series else {
            return;
        };
        series.values.duration.observe(duration.as_secs_f64());
        let key = StatusKey {
            route: Arc::as_ptr(series) as usize,
            http_status: code,
            error: if code == 0 {
                RouteError::Cancel
            } else {
                RouteError::None
            },
        };
        self.statuses.with(
            &key,
            |k| status_labels(&series.labels, k),
            |count| count.fetch_add(1, Ordering::Relaxed),
        );
    }

    /// The route families, in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        text::family(
            out,
            STATUSES,
            "HTTP response statuses of the requests each route took.",
            "counter",
        );
        prometheus_registry::samples(out, STATUSES, &self.statuses.sorted(), |c| {
            c.load(Ordering::Relaxed)
        });
        text::family(
            out,
            DURATION,
            "The time between a request's arrival and the end of its response, per route.",
            "histogram",
        );
        for s in self.routes.sorted() {
            s.values
                .duration
                .render(out, DURATION, &format!("{{{}}}", s.labels));
        }
        text::family(
            out,
            OVERFLOW,
            "Route label sets refused because the number of series is at its bound.",
            "counter",
        );
        let refused = self.routes.overflow() + self.statuses.overflow();
        let _ = writeln!(out, "{OVERFLOW} {refused}");
    }
}

/// The label set of a status counter: the route's labels, `http_status` (empty without a
/// response) and `error`.
fn status_labels(route: &str, k: &StatusKey) -> String {
    let status = if k.http_status == 0 {
        String::new()
    } else {
        k.http_status.to_string()
    };
    let mut out = String::with_capacity(route.len() + 40);
    let _ = write!(out, "{{{route},http_status=\"{status}\",error=\"");
    text::escape_into(&mut out, k.error.as_str());
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_registry::scrape;

    fn count(text: &str, filter: &[(&str, &str)]) -> u64 {
        scrape::sum(&scrape::parse(text), STATUSES, filter) as u64
    }

    #[test]
    fn counts_each_route_and_status_exactly() {
        let metrics = RouteMetrics::default();
        let a = metrics.route(
            &RouteKey::new("shop", "reviews", "VirtualService", "shop", "a"),
            "shop/reviews/a",
        );
        let b = metrics.route(
            &RouteKey::new("shop", "reviews", "HTTPRoute", "shop", "b"),
            "shop/reviews/b/match-0",
        );
        let default = metrics.route(&RouteKey::default_of("shop", "reviews"), "");
        let ms = Duration::from_millis;
        for _ in 0..7 {
            metrics.record(&a, 200, ms(3));
        }
        for _ in 0..3 {
            metrics.record(&a, 503, ms(30));
        }
        metrics.record(&b, 200, ms(700));
        metrics.record(&default, 404, ms(1));
        metrics.record(&default, 0, ms(1));
        let mut text = String::new();
        metrics.render(&mut text);

        let route_a = [("route_name", "a"), ("route_kind", "VirtualService")];
        assert_eq!(count(&text, &route_a), 10);
        assert_eq!(
            count(&text, &[("route_name", "a"), ("http_status", "503")]),
            3
        );
        assert_eq!(
            count(&text, &[("route_name", "a"), ("http_status", "200")]),
            7
        );
        assert_eq!(
            count(
                &text,
                &[
                    ("route_group", "gateway.networking.k8s.io"),
                    ("route_name", "b")
                ]
            ),
            1
        );
        let default = [("route_kind", "default"), ("route_name", "http")];
        assert_eq!(count(&text, &default), 2);
        assert_eq!(count(&text, &[("http_status", ""), ("error", "CANCEL")]), 1);
        assert_eq!(count(&text, &[("parent_name", "reviews")]), 13);
        assert!(
            text.contains(
                "outbound_http_route_request_statuses_total{parent_group=\"core\",\
                 parent_kind=\"Service\",parent_namespace=\"shop\",parent_name=\"reviews\",\
                 route_group=\"networking.istio.io\",route_kind=\"VirtualService\",\
                 route_namespace=\"shop\",route_name=\"a\",http_status=\"503\",error=\"\"} 3\n"
            ),
            "{text}"
        );
        // The histogram has no status: one series per route, in seconds.
        let samples = scrape::parse(&text);
        let a_count = scrape::sum(&samples, &format!("{DURATION}_count"), &route_a);
        assert_eq!(a_count, 10.0);
        let le_5ms = [("route_name", "a"), ("le", "0.005")];
        assert_eq!(
            scrape::sum(&samples, &format!("{DURATION}_bucket"), &le_5ms),
            7.0
        );
        let a_sum = scrape::sum(&samples, &format!("{DURATION}_sum"), &route_a);
        assert!((a_sum - 0.111).abs() < 1e-9, "{a_sum}");
        assert!(text.contains(&format!("{OVERFLOW} 0\n")));
    }

    #[test]
    fn a_route_keeps_its_series_across_configs_and_the_bound_holds() {
        let metrics = RouteMetrics {
            routes: Registry::with_limit(1),
            statuses: Registry::with_limit(1),
        };
        let key = RouteKey::new("shop", "reviews", "ServiceProfile", "shop", "GET /books");
        let first = metrics.route(&key, "first");
        let again = metrics.route(&key, "again");
        metrics.record(&first, 200, Duration::ZERO);
        metrics.record(&again, 200, Duration::ZERO);
        // A second status of the same route, and a second route, are refused and counted.
        metrics.record(&again, 500, Duration::ZERO);
        let other = metrics.route(&RouteKey::default_of("shop", "reviews"), "");
        metrics.record(&other, 200, Duration::ZERO);
        let mut text = String::new();
        metrics.render(&mut text);
        assert_eq!(
            count(
                &text,
                &[("route_group", "linkerd.io"), ("http_status", "200")]
            ),
            2
        );
        assert_eq!(count(&text, &[]), 2);
        assert!(text.contains(&format!("{OVERFLOW} 2\n")), "{text}");
    }
}
