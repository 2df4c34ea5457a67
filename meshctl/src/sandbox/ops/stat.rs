//! `meshctl stat` and `edges`: scrape every proxy's `/metrics` (each node's ztunnel, each waypoint pod)
//! twice, a window apart, and compute each row's golden metrics, or who talked to whom, with
//! [`crate::operator::stat`]. The sandbox's lock is held only to find the proxies and the
//! rows, never during the window, so the cluster stays usable meanwhile.
//! With `--prometheus`, the same rows come from an existing Prometheus's answers over the
//! window ([`crate::operator::promql`]) instead, at once.

use std::time::Duration;

use super::proxies;
use super::sandbox::Sandbox;
use super::scrape::scrape_window;
use crate::operator::stat::Target;
use crate::operator::window::{Measured, SeenEdges, StatOptions};
use crate::sandbox::error::Result;
use crate::sandbox::host::prometheus::{self, PrometheusUrl};
use crate::sandbox::model::stat::targets;
use crate::sandbox::settings::SandboxSettings;

/// Measures: `started` is called once the first scrape is done and the window runs.
pub fn measure(
    cfg: &SandboxSettings,
    options: &StatOptions,
    started: impl FnOnce(usize),
) -> Result<Measured> {
    let (proxies, targets) = {
        let sb = Sandbox::open(cfg)?;
        (proxies::all(&sb), rows_of(&sb, options))
    };
    let window = scrape_window(&proxies, options.window, started);
    Ok(Measured::of(options.resource, &targets, window))
}

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
        (sb.control()?.netns.clone(), rows_of(&sb, options))
    };
    Ok(prometheus::measure(url, Some(netns), options, &targets)?)
}

/// The rows `options` asks for, with their pods, as the sandbox holds them.
fn rows_of(sb: &Sandbox, options: &StatOptions) -> Vec<Target> {
    targets(
        &sb.cluster,
        options.resource,
        options.namespace.as_deref(),
        options.name.as_deref(),
    )
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
    Ok(SeenEdges::of(namespace, window))
}
