//! `stat`, `edges` and `routes` as the operator types and reads them, in either mode: what
//! their arguments ask for, and their tables (as `linkerd viz stat`, `edges` and `routes`
//! print them), JSON and warnings.

use std::time::Duration;

use super::stat::{Edge, Resource, Row};
use super::table::table;
use super::window::{Measured, MeasuredRoutes, SeenEdges, StatOptions};

/// What `stat RESOURCE[/NAME] [-n NAMESPACE | -A] --window W` asks for; namespaces are
/// listed across the cluster.
pub fn stat_options(
    resource: &str,
    namespace: &str,
    all_namespaces: bool,
    window: Duration,
) -> Result<StatOptions, String> {
    let (kind, name) = match resource.split_once('/') {
        Some((kind, name)) => (kind, Some(name.to_owned())),
        None => (resource, None),
    };
    let resource = Resource::parse(kind)?;
    Ok(StatOptions {
        resource,
        namespace: (!all_namespaces && resource != Resource::Namespace)
            .then(|| namespace.to_owned()),
        name,
        window,
    })
}

/// The namespace `edges RESOURCE [-n NAMESPACE | -A]` watches (`None`: all); edges are
/// between workloads, so only `deploy` is taken.
pub fn edges_namespace(
    resource: &str,
    namespace: &str,
    all_namespaces: bool,
) -> Result<Option<String>, String> {
    if Resource::parse(resource)? != Resource::Deployment {
        return Err(format!(
            "{resource}: edges are between workloads; use `edges deploy`"
        ));
    }
    Ok((!all_namespaces).then(|| namespace.to_owned()))
}

/// The service `routes svc/NAME -n NAMESPACE` is about: its namespace and name.
pub fn routes_service(
    resource: &str,
    namespace: &str,
    all_namespaces: bool,
) -> Result<(String, String), String> {
    let name = match resource.split_once('/') {
        Some((kind, name))
            if Resource::parse(kind) == Ok(Resource::Service) && !name.is_empty() =>
        {
            name
        }
        _ => {
            return Err(format!(
                "{resource}: routes belong to a service: routes svc/NAME"
            ));
        }
    };
    if all_namespaces {
        return Err("routes are of one service: name its namespace with -n, not -A".to_owned());
    }
    Ok((namespace.to_owned(), name.to_owned()))
}

/// Says on stderr that the window runs, once the first scrape of `proxies` proxies is done.
pub fn window_started(proxies: usize, window: Duration) {
    eprintln!("scraped {proxies} proxies; measuring for {window:?}");
}

/// Prints `stat`'s rows (a table, or JSON) and a warning per proxy that could not be read.
pub fn print_stat(measured: &Measured, options: &StatOptions, json: bool) {
    warn_unreachable(&measured.unreachable);
    if json {
        print_json(measured);
    } else {
        let across = options.namespace.is_none() && options.resource != Resource::Namespace;
        print!("{}", stat_table(&measured.rows, across));
    }
}

/// Prints `edges` (a table, plaintext in red on a terminal, or JSON) and a warning per proxy
/// that could not be read.
pub fn print_edges(seen: &SeenEdges, json: bool) {
    warn_unreachable(&seen.unreachable);
    if json {
        print_json(seen);
    } else {
        let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
        print!("{}", edges_table(&seen.edges, colour));
    }
}

/// Prints `routes` (a table, or JSON) and a warning per proxy that could not be read.
pub fn print_routes(measured: &MeasuredRoutes, json: bool) {
    warn_unreachable(&measured.unreachable);
    if json {
        print_json(measured);
    } else {
        print!("{}", routes_table(measured));
    }
}

fn warn_unreachable(unreachable: &[String]) {
    for proxy in unreachable {
        eprintln!("warning: no metrics from {proxy}: its traffic is missing");
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// A value, or `-` where nothing was measured.
fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

/// A latency as `stat` and `routes` print it: `12ms`, `3.4ms`, `-`.
fn millis(ms: Option<f64>) -> String {
    or_dash(ms.map(|ms| {
        if ms >= 10.0 {
            format!("{ms:.0}ms")
        } else {
            format!("{ms:.1}ms")
        }
    }))
}

/// A success rate as `stat` and `routes` print it: `99.50%`, `-`.
fn percent(rate: Option<f64>) -> String {
    or_dash(rate.map(|s| format!("{:.2}%", s * 100.0)))
}

/// `stat`'s table, as `linkerd viz stat` prints it; `-` where nothing was measured.
pub fn stat_table(rows: &[Row], with_namespace: bool) -> String {
    if rows.is_empty() {
        return "No resources found.\n".to_owned();
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = Vec::new();
            if with_namespace {
                row.push(r.namespace.clone());
            }
            row.extend([
                r.name.clone(),
                format!("{}/{}", r.meshed_pods, r.pods),
                percent(r.success_rate),
                or_dash(r.requests_per_second.map(|rps| format!("{rps:.1}rps"))),
                millis(r.latency_ms_p50),
                millis(r.latency_ms_p95),
                millis(r.latency_ms_p99),
                r.tcp_connections.to_string(),
                format!("{:.1}B/s", r.read_bytes_per_second),
                format!("{:.1}B/s", r.write_bytes_per_second),
                or_dash(r.mtls_share.map(|m| format!("{:.0}%", m * 100.0))),
            ]);
            row
        })
        .collect();
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "MESHED",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
        "TCP_CONN",
        "READ_BYTES/SEC",
        "WRITE_BYTES/SEC",
        "MTLS",
    ]);
    table(&header, &body)
}

/// `routes`' table, as `linkerd viz routes` prints it: one row per route, `[default]` for
/// requests no route took.
pub fn routes_table(measured: &MeasuredRoutes) -> String {
    if measured.routes.is_empty() {
        return format!(
            "No routes found: no waypoint reports service {}/{} (is it labelled \
             istio.io/use-waypoint?)\n",
            measured.namespace, measured.service
        );
    }
    let body: Vec<Vec<String>> = measured
        .routes
        .iter()
        .map(|r| {
            let source = if r.kind.is_empty() {
                "-".to_owned()
            } else {
                format!("{}/{}", r.kind, r.namespace)
            };
            vec![
                r.route.clone(),
                source,
                percent(r.success_rate),
                format!("{:.1}rps", r.requests_per_second),
                millis(r.latency_ms_p50),
                millis(r.latency_ms_p95),
                millis(r.latency_ms_p99),
            ]
        })
        .collect();
    let header = [
        "ROUTE",
        "SOURCE",
        "SUCCESS",
        "RPS",
        "LATENCY_P50",
        "LATENCY_P95",
        "LATENCY_P99",
    ];
    table(&header, &body)
}

/// `edges`' table, as `linkerd viz edges` prints it: plaintext edges marked (in red on a
/// terminal).
pub fn edges_table(edges: &[Edge], colour: bool) -> String {
    if edges.is_empty() {
        return "No edges seen in the window.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = edges
        .iter()
        .map(|e| {
            let secured = match (e.secured, colour) {
                (true, _) => "√".to_owned(),
                (false, true) => "\x1b[31m× plaintext\x1b[0m".to_owned(),
                (false, false) => "× plaintext".to_owned(),
            };
            vec![
                e.source.clone(),
                e.destination.clone(),
                e.source_namespace.clone(),
                e.destination_namespace.clone(),
                e.source_identity.clone(),
                e.destination_identity.clone(),
                e.connections.to_string(),
                secured,
            ]
        })
        .collect();
    let header = [
        "SRC",
        "DST",
        "SRC_NS",
        "DST_NS",
        "CLIENT_ID",
        "SERVER_ID",
        "CONNS",
        "SECURED",
    ];
    table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_shows_dashes_where_nothing_was_measured() {
        let row = |name: &str, requests: Option<u64>| Row {
            namespace: "shop".into(),
            name: name.into(),
            meshed_pods: 2,
            pods: 3,
            requests,
            success_rate: requests.map(|_| 0.9),
            requests_per_second: requests.map(|r| r as f64 / 10.0),
            latency_ms_p50: requests.map(|_| 1.25),
            latency_ms_p95: requests.map(|_| 12.0),
            latency_ms_p99: requests.map(|_| 40.4),
            tcp_connections: 4,
            tcp_opened: 5,
            read_bytes_per_second: 100.0,
            write_bytes_per_second: 2048.5,
            mtls_share: Some(1.0),
        };
        let text = stat_table(&[row("orders", Some(100)), row("cache", None)], false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("NAME     MESHED   SUCCESS   RPS"),
            "{text}"
        );
        let orders: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            orders,
            [
                "orders",
                "2/3",
                "90.00%",
                "10.0rps",
                "1.2ms",
                "12ms",
                "40ms",
                "4",
                "100.0B/s",
                "2048.5B/s",
                "100%"
            ]
        );
        let cache: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&cache[..7], ["cache", "2/3", "-", "-", "-", "-", "-"]);
        assert!(stat_table(&[row("orders", None)], true).starts_with("NAMESPACE"));
        assert_eq!(stat_table(&[], false), "No resources found.\n");
    }

    #[test]
    fn edges_mark_plaintext() {
        let edge = |secured| Edge {
            source_namespace: "default".into(),
            source: "client".into(),
            source_identity: "unknown".into(),
            destination_namespace: "shop".into(),
            destination: "frontend".into(),
            destination_identity: "spiffe://cluster.local/ns/shop/sa/frontend".into(),
            secured,
            connections: 3,
        };
        let text = edges_table(&[edge(true), edge(false)], false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SRC      DST        SRC_NS"), "{text}");
        assert!(lines[1].ends_with("3       √"), "{text}");
        assert!(lines[2].ends_with("× plaintext"), "{text}");
        assert!(edges_table(&[edge(false)], true).contains("\x1b[31m× plaintext"));
        assert_eq!(edges_table(&[], false), "No edges seen in the window.\n");
    }

    #[test]
    fn arguments_read_as_the_sandbox_reads_them() {
        let window = Duration::from_secs(1);
        let stat = stat_options("deploy/orders", "shop", false, window).unwrap();
        assert_eq!(
            (
                stat.resource,
                stat.namespace.as_deref(),
                stat.name.as_deref()
            ),
            (Resource::Deployment, Some("shop"), Some("orders"))
        );
        assert_eq!(
            stat_options("ns", "shop", false, window).unwrap().namespace,
            None
        );
        assert_eq!(
            stat_options("svc", "shop", true, window).unwrap().namespace,
            None
        );
        assert_eq!(
            edges_namespace("deploy", "shop", false),
            Ok(Some("shop".to_owned()))
        );
        assert_eq!(
            edges_namespace("svc", "shop", false),
            Err("svc: edges are between workloads; use `edges deploy`".to_owned())
        );
        assert_eq!(
            routes_service("svc/reviews", "shop", false),
            Ok(("shop".to_owned(), "reviews".to_owned()))
        );
        assert!(routes_service("deploy/reviews", "shop", false).is_err());
        assert!(routes_service("svc/reviews", "shop", true).is_err());
    }
}
