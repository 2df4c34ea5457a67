//! `meshctl routes`: the golden metrics of each route of one service over a window, from
//! the waypoints' per-route metrics (Linkerd's `outbound_http_route_request_statuses_total`
//! and `outbound_http_route_request_duration_seconds`), computed as `stat` computes a
//! service's from Istio's: success is not 5xx, latency percentiles as `histogram_quantile`.

use std::collections::BTreeMap;

use prometheus_registry::scrape::Sample;
use serde::Serialize;

use super::stat::quantile;

const STATUSES: &str = "outbound_http_route_request_statuses_total";
const DURATION_BUCKETS: &str = "outbound_http_route_request_duration_seconds_bucket";
/// The `route_kind` of the route that takes what no configured route does.
const DEFAULT_KIND: &str = "default";
/// How the default route is shown, as `linkerd viz routes` shows it.
pub const DEFAULT_ROUTE: &str = "[default]";

/// The golden metrics of one route over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteRow {
    /// The route's name in its object: a VirtualService http route's name, an HTTPRoute or
    /// GRPCRoute rule's name (`rule-<i>` unnamed), a ServiceProfile route's name;
    /// `[default]` for requests no route took (none matched, or refused before routing).
    pub route: String,
    /// The kind of the object that made the route; empty for the default route.
    pub kind: String,
    /// That object's namespace; empty for the default route.
    pub namespace: String,
    /// Requests the route took in the window, over every waypoint.
    pub requests: u64,
    /// Share of those that did not fail (not 5xx), from 0 to 1; `None` without requests.
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Median latency, milliseconds (histogram estimate); `None` without requests.
    pub latency_ms_p50: Option<f64>,
    /// 95th percentile latency, milliseconds.
    pub latency_ms_p95: Option<f64>,
    /// 99th percentile latency, milliseconds.
    pub latency_ms_p99: Option<f64>,
}

/// The rows of the routes of service `name` in `namespace`, from `increase` (what every
/// waypoint's counters grew by over the window of `seconds`): every route a waypoint
/// reports, with requests or not, named routes by name and the default route last.
pub fn route_rows(namespace: &str, name: &str, increase: &[Sample], seconds: f64) -> Vec<RouteRow> {
    // (is default, route name, kind, namespace) → its samples.
    let mut routes: BTreeMap<(bool, &str, &str, &str), Vec<&Sample>> = BTreeMap::new();
    for s in increase {
        if (s.name != STATUSES && s.name != DURATION_BUCKETS)
            || s.label("parent_namespace") != namespace
            || s.label("parent_name") != name
        {
            continue;
        }
        let key = if s.label("route_kind") == DEFAULT_KIND {
            (true, DEFAULT_ROUTE, "", "")
        } else {
            (
                false,
                s.label("route_name"),
                s.label("route_kind"),
                s.label("route_namespace"),
            )
        };
        routes.entry(key).or_default().push(s);
    }
    routes
        .into_iter()
        .map(|((_, route, kind, route_namespace), samples)| {
            row(route, kind, route_namespace, &samples, seconds)
        })
        .collect()
}

fn row(route: &str, kind: &str, namespace: &str, samples: &[&Sample], seconds: f64) -> RouteRow {
    let statuses = || samples.iter().filter(|s| s.name == STATUSES);
    // Folded from +0.0: an empty `sum` of floats is -0.0, which would print as such.
    let requests = statuses().fold(0.0, |sum, s| sum + s.value);
    let failed = statuses()
        .filter(|s| s.label("http_status").starts_with('5'))
        .fold(0.0, |sum, s| sum + s.value);
    let latency = |q| quantile(q, samples, DURATION_BUCKETS).map(|seconds| seconds * 1000.0);
    RouteRow {
        route: route.to_owned(),
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        requests: requests as u64,
        success_rate: (requests > 0.0).then(|| (requests - failed) / requests),
        requests_per_second: if seconds > 0.0 {
            requests / seconds
        } else {
            0.0
        },
        latency_ms_p50: latency(0.5),
        latency_ms_p95: latency(0.95),
        latency_ms_p99: latency(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples of one route of `shop/reviews` (or of `parent`).
    fn route(parent: &str, kind: &str, name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("parent_namespace", "shop".to_owned()),
            ("parent_name", parent.to_owned()),
            ("route_kind", kind.to_owned()),
            (
                "route_namespace",
                if kind == "default" { "" } else { "shop" }.to_owned(),
            ),
            ("route_name", name.to_owned()),
        ]
    }

    fn with(
        labels: &[(&'static str, String)],
        more: &[(&'static str, &str)],
    ) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .chain(more.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())))
            .collect()
    }

    fn status(labels: &[(&'static str, String)], code: &str, value: f64) -> Sample {
        let l = with(labels, &[("http_status", code), ("error", "")]);
        let refs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Sample::new(STATUSES, &refs, value)
    }

    fn bucket(labels: &[(&'static str, String)], le: &str, value: f64) -> Sample {
        let l = with(labels, &[("le", le)]);
        let refs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Sample::new(DURATION_BUCKETS, &refs, value)
    }

    #[test]
    fn one_row_per_route_with_the_default_last() {
        let a = route("reviews", "VirtualService", "a");
        let b = route("reviews", "HTTPRoute", "b");
        let default = route("reviews", "default", "http");
        let other = route("ratings", "VirtualService", "a");
        let increase = [
            // Two waypoints report route a.
            status(&a, "200", 60.0),
            status(&a, "200", 30.0),
            status(&a, "503", 10.0),
            bucket(&a, "0.005", 50.0),
            bucket(&a, "0.01", 100.0),
            bucket(&a, "+Inf", 100.0),
            bucket(&b, "0.005", 0.0),
            bucket(&b, "+Inf", 0.0),
            status(&default, "404", 5.0),
            status(&other, "200", 1000.0),
        ];
        let rows = route_rows("shop", "reviews", &increase, 10.0);
        let names: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.route.as_str(), r.kind.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("a", "VirtualService"),
                ("b", "HTTPRoute"),
                ("[default]", "")
            ]
        );
        let a = &rows[0];
        assert_eq!(a.requests, 100);
        assert_eq!(a.success_rate, Some(0.9));
        assert_eq!(a.requests_per_second, 10.0);
        let close =
            |ms: Option<f64>, expected: f64| ms.is_some_and(|ms| (ms - expected).abs() < 1e-9);
        assert!(close(a.latency_ms_p50, 5.0), "{:?}", a.latency_ms_p50);
        assert!(close(a.latency_ms_p99, 9.9), "{:?}", a.latency_ms_p99);
        // A route without requests in the window is listed, with nothing measured.
        assert_eq!(rows[1].requests, 0);
        assert_eq!(rows[1].success_rate, None);
        assert_eq!(rows[1].latency_ms_p50, None);
        assert_eq!(rows[2].requests, 5);
        assert_eq!(rows[2].success_rate, Some(1.0));
        assert!(route_rows("shop", "details", &increase, 10.0).is_empty());
    }
}
