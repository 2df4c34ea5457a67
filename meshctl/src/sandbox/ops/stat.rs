//! `meshctl stat` and `edges`: scrape every proxy's `/metrics` (each node's ztunnel, each waypoint pod)
//! twice, a window apart, and compute each row's golden metrics, or who talked to whom, with
//! [`crate::sandbox::model::stat`]. The sandbox's lock is held only to find the proxies and
//! the rows, never during the window, so the cluster stays usable meanwhile. With
//! `--prometheus`, the same rows come from an existing Prometheus's answers over the window
//! ([`crate::sandbox::model::promql`]) instead, at once.

use std::collections::BTreeMap;
use std::time::Duration;

use super::proxies;
use super::sandbox::Sandbox;
use super::scrape::scrape_window;
use crate::sandbox::error::Result;
use crate::sandbox::host::prometheus::{PrometheusClient, PrometheusUrl};
use crate::sandbox::model::promql::{self, PrometheusError, queries};
use crate::sandbox::model::stat::{
    Edge, Resource, Row, Target, edges as model_edges, rows, targets,
};
use crate::sandbox::settings::SandboxSettings;

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
        (proxies::all(&sb), found)
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

/// How long one query to Prometheus may take, connecting included.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Measures with the Prometheus at `url`: its answers over the last `options.window`. Meshed
/// and total pods still come from the sandbox. meshctl connects from the control plane's
/// network namespace, which reaches every node and pod address, as a Prometheus scraping the
/// proxies must too.
pub fn measure_from_prometheus(
    cfg: &SandboxSettings,
    options: &StatOptions,
    url: &str,
) -> Result<Measured> {
    let url = PrometheusUrl::parse(url)?;
    let (netns, targets) = {
        let sb = Sandbox::open(cfg)?;
        let found = targets(
            &sb.cluster,
            options.resource,
            options.namespace.as_deref(),
            options.name.as_deref(),
        );
        (sb.control()?.netns.clone(), found)
    };
    Ok(ask_prometheus(url, Some(netns), options, &targets)?)
}

/// The rows of `targets` from the Prometheus at `url`, connecting from `netns` (meshctl's own
/// namespace when `None`): one query per figure, over the last `options.window`.
pub fn ask_prometheus(
    url: PrometheusUrl,
    netns: Option<String>,
    options: &StatOptions,
    targets: &[Target],
) -> std::result::Result<Measured, PrometheusError> {
    let client = PrometheusClient::new(url, netns, PROMETHEUS_TIMEOUT)?;
    let mut answers = BTreeMap::new();
    for query in queries(
        options.resource,
        options.namespace.as_deref(),
        options.name.as_deref(),
        options.window,
    ) {
        answers.insert(query.measure, client.query(&query.promql)?);
    }
    Ok(Measured {
        window_seconds: options.window.as_secs_f64(),
        rows: promql::rows(options.resource, targets, &answers, options.window),
        unreachable: Vec::new(),
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
    let proxies = proxies::all(&Sandbox::open(cfg)?);
    let window = scrape_window(&proxies, window, started);
    Ok(SeenEdges {
        window_seconds: window.seconds,
        edges: model_edges(&window.increase, namespace),
        unreachable: window.unreachable,
    })
}
