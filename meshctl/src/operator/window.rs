//! What two scrapes of every proxy's `/metrics`, a window apart, found, and what `stat`,
//! `edges` and `routes` report from it: the same in both modes, which differ only in how
//! they reach the proxies (the sandbox inside their network namespaces, Kubernetes mode
//! through the API server's pod proxy) and find the rows.

use std::time::Duration;

use prometheus_registry::scrape::Sample;
use serde::Serialize;

use super::routes::{RouteRow, route_rows};
use super::stat::{Edge, Resource, Row, Target, edges, increase, rows};

/// One proxy's samples, or why they could not be read.
pub type Scraped = Result<Vec<Sample>, String>;

/// What two scrapes of every proxy, a window apart, found.
pub struct Window {
    /// What every counter grew by (every proxy's, concatenated).
    pub increase: Vec<Sample>,
    /// The samples of the second scrapes.
    pub now: Vec<Sample>,
    /// Seconds between the two scrapes.
    pub seconds: f64,
    /// Proxies whose metrics could not be read, with why.
    pub unreachable: Vec<String>,
}

impl Window {
    /// The window of the proxies called `names`, from their `first` and `second` scrapes (in
    /// the same order) `seconds` apart; a proxy missing either scrape is unreachable.
    pub fn of(names: &[String], first: Vec<Scraped>, second: Vec<Scraped>, seconds: f64) -> Self {
        let mut window = Self {
            increase: Vec::new(),
            now: Vec::new(),
            seconds,
            unreachable: Vec::new(),
        };
        for ((name, before), after) in names.iter().zip(first).zip(second) {
            match (before, after) {
                (Ok(before), Ok(after)) => {
                    window.increase.extend(increase(&before, &after));
                    window.now.extend(after);
                }
                (Err(e), _) | (_, Err(e)) => window.unreachable.push(format!("{name}: {e}")),
            }
        }
        window
    }
}

/// What `stat` measures.
#[derive(Clone, Debug)]
pub struct StatOptions {
    /// Deployments, services or namespaces.
    pub resource: Resource,
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Only this object.
    pub name: Option<String>,
    /// Time between the two scrapes.
    pub window: Duration,
}

/// `stat`'s rows, over how long they were measured, and the proxies that could not be
/// scraped.
#[derive(Debug, Serialize)]
pub struct Measured {
    /// Seconds between the two scrapes.
    pub window_seconds: f64,
    /// One per object.
    pub rows: Vec<Row>,
    /// Proxies whose metrics could not be read, with why; their traffic is missing.
    pub unreachable: Vec<String>,
}

impl Measured {
    /// The rows of `targets` (of `resource`) over `window`.
    pub fn of(resource: Resource, targets: &[Target], window: Window) -> Self {
        Self {
            window_seconds: window.seconds,
            rows: rows(
                resource,
                targets,
                &window.increase,
                &window.now,
                window.seconds,
            ),
            unreachable: window.unreachable,
        }
    }
}

/// The edges of the window, and the proxies that could not be scraped.
#[derive(Debug, Serialize)]
pub struct SeenEdges {
    /// Seconds between the two scrapes.
    pub window_seconds: f64,
    /// One per (client, server, mutual TLS or not).
    pub edges: Vec<Edge>,
    /// Proxies whose metrics could not be read, with why; their traffic is missing.
    pub unreachable: Vec<String>,
}

impl SeenEdges {
    /// The edges of `window` with a side in `namespace` (all when `None`).
    pub fn of(namespace: Option<&str>, window: Window) -> Self {
        Self {
            window_seconds: window.seconds,
            edges: edges(&window.increase, namespace),
            unreachable: window.unreachable,
        }
    }
}

/// The routes of one service over a window, and the proxies that could not be scraped.
#[derive(Debug, Serialize)]
pub struct MeasuredRoutes {
    /// The service's namespace.
    pub namespace: String,
    /// The service.
    pub service: String,
    /// Seconds between the two scrapes.
    pub window_seconds: f64,
    /// One per route a waypoint reports for the service.
    pub routes: Vec<RouteRow>,
    /// Proxies whose metrics could not be read, with why; their traffic is missing.
    pub unreachable: Vec<String>,
}

impl MeasuredRoutes {
    /// The routes of service `name` in `namespace` over `window`.
    pub fn of(namespace: &str, name: &str, window: Window) -> Self {
        Self {
            namespace: namespace.to_owned(),
            service: name.to_owned(),
            window_seconds: window.seconds,
            routes: route_rows(namespace, name, &window.increase, window.seconds),
            unreachable: window.unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(value: f64) -> Sample {
        Sample {
            name: "istio_tcp_connections_opened_total".to_owned(),
            labels: [("reporter".to_owned(), "destination".to_owned())].into(),
            value,
        }
    }

    #[test]
    fn a_window_joins_each_proxys_two_scrapes_and_names_the_unreachable() {
        let names = ["ztunnel node1".to_owned(), "ztunnel node2".to_owned()];
        let first = vec![Ok(vec![opened(2.0)]), Err("timed out".to_owned())];
        let second = vec![Ok(vec![opened(5.0)]), Ok(vec![opened(9.0)])];
        let window = Window::of(&names, first, second, 2.0);
        assert_eq!(window.increase, [opened(3.0)]);
        assert_eq!(window.now, [opened(5.0)]);
        assert_eq!(window.unreachable, ["ztunnel node2: timed out"]);
    }
}
