//! `meshctl stat` and `edges`: scrape every proxy's `/metrics` (each node's ztunnel, each waypoint pod)
//! twice, a window apart, and compute each row's golden metrics, or who talked to whom, with
//! [`crate::sandbox::model::stat`]. The sandbox's lock is held only to find the proxies and
//! the rows, never during the window, so the cluster stays usable meanwhile.

use std::time::{Duration, Instant};

use controller::deploy::waypoints::GATEWAY_NAME_LABEL;
use prometheus_registry::scrape::{self, Sample};

use super::sandbox::Sandbox;
use crate::sandbox::error::Result;
use crate::sandbox::host::admin;
use crate::sandbox::model::control::Component;
use crate::sandbox::model::stat::{
    Edge, Resource, Row, edges as model_edges, increase, rows, targets,
};
use crate::sandbox::settings::SandboxSettings;

/// Where both proxies serve Prometheus metrics (Istio's port).
const METRICS_PORT: u16 = 15020;
/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// What to measure.
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

/// One proxy to scrape.
struct Proxy {
    /// `ztunnel node1`, `waypoint shop/waypoint-...`.
    name: String,
    /// The network namespace its metrics port listens in.
    netns: String,
}

/// The rows, over how long they were measured, and the proxies that could not be scraped.
#[derive(Debug, serde::Serialize)]
pub struct Measured {
    /// Seconds between the two scrapes.
    pub window_seconds: f64,
    /// One per object.
    pub rows: Vec<Row>,
    /// Proxies whose metrics could not be read, with why; their traffic is missing.
    pub unreachable: Vec<String>,
}

/// What two scrapes of every proxy, a window apart, found.
struct Window {
    /// What every counter grew by (every proxy's, concatenated).
    increase: Vec<Sample>,
    /// The samples of the second scrapes.
    now: Vec<Sample>,
    /// Seconds between the two scrapes.
    seconds: f64,
    /// Proxies whose metrics could not be read, with why.
    unreachable: Vec<String>,
}

/// Measures: `started` is called once the first scrape is done and the window runs.
pub fn measure(
    cfg: &SandboxSettings,
    options: &StatOptions,
    started: impl FnOnce(usize),
) -> Result<Measured> {
    let (proxies, targets) = {
        let sb = Sandbox::open(cfg)?;
        let found = targets(
            &sb.cluster,
            options.resource,
            options.namespace.as_deref(),
            options.name.as_deref(),
        );
        (proxies(&sb), found)
    };
    let window = scrape_window(&proxies, options.window, started);
    Ok(Measured {
        window_seconds: window.seconds,
        rows: rows(
            options.resource,
            &targets,
            &window.increase,
            &window.now,
            window.seconds,
        ),
        unreachable: window.unreachable,
    })
}

/// The edges of the window, and the proxies that could not be scraped.
#[derive(Debug, serde::Serialize)]
pub struct SeenEdges {
    /// Seconds between the two scrapes.
    pub window_seconds: f64,
    /// One per (client, server, mutual TLS or not).
    pub edges: Vec<Edge>,
    /// Proxies whose metrics could not be read, with why; their traffic is missing.
    pub unreachable: Vec<String>,
}

/// Who talked to whom over `window` (with a side in `namespace`; all when `None`).
pub fn edges(
    cfg: &SandboxSettings,
    namespace: Option<&str>,
    window: Duration,
    started: impl FnOnce(usize),
) -> Result<SeenEdges> {
    let proxies = proxies(&Sandbox::open(cfg)?);
    let window = scrape_window(&proxies, window, started);
    Ok(SeenEdges {
        window_seconds: window.seconds,
        edges: model_edges(&window.increase, namespace),
        unreachable: window.unreachable,
    })
}

/// Scrapes `proxies`, waits `window`, scrapes them again.
fn scrape_window(proxies: &[Proxy], window: Duration, started: impl FnOnce(usize)) -> Window {
    let first = scrape_all(proxies);
    let begun = Instant::now();
    started(proxies.len());
    std::thread::sleep(window);
    let second = scrape_all(proxies);
    let seconds = begun.elapsed().as_secs_f64();
    let mut increase_all = Vec::new();
    let mut now = Vec::new();
    let mut unreachable = Vec::new();
    for ((proxy, before), after) in proxies.iter().zip(first).zip(second) {
        match (before, after) {
            (Ok(before), Ok(after)) => {
                increase_all.extend(increase(&before, &after));
                now.extend(after);
            }
            (Err(e), _) | (_, Err(e)) => unreachable.push(format!("{}: {e}", proxy.name)),
        }
    }
    Window {
        increase: increase_all,
        now,
        seconds,
        unreachable,
    }
}

/// Every node's ztunnel and every waypoint pod.
fn proxies(sb: &Sandbox) -> Vec<Proxy> {
    let mut proxies: Vec<Proxy> = sb
        .control()
        .map(|control| {
            sb.cluster
                .nodes
                .iter()
                .filter_map(|node| {
                    let process = control.find(&Component::Ztunnel(node.name.clone()))?;
                    Some(Proxy {
                        name: format!("ztunnel {}", node.name),
                        netns: process.netns.clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    proxies.extend(
        sb.cluster
            .pods
            .values()
            .filter(|pod| pod.labels.contains_key(GATEWAY_NAME_LABEL))
            .map(|pod| Proxy {
                name: format!("waypoint {}/{}", pod.namespace, pod.name),
                netns: pod.netns.clone(),
            }),
    );
    proxies
}

/// Each proxy's samples, or why they could not be read.
fn scrape_all(proxies: &[Proxy]) -> Vec<std::result::Result<Vec<Sample>, String>> {
    proxies
        .iter()
        .map(|proxy| {
            let answer = admin::get(&proxy.netns, METRICS_PORT, "/metrics", SCRAPE_TIMEOUT)
                .map_err(|e| e.to_string())?;
            if answer.status != 200 {
                return Err(format!("/metrics answered {}", answer.status));
            }
            Ok(scrape::parse(&String::from_utf8_lossy(&answer.body)))
        })
        .collect()
}
