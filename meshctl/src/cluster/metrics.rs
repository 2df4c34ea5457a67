//! `stat`, `edges` and `routes` against a Kubernetes cluster: every proxy (each pod of the
//! ztunnel DaemonSet, each waypoint Gateway's pods) scraped on its metrics port, which
//! listens on all addresses, through the API server's pod proxy, twice a window apart; the
//! rows' objects listed from the API server. What is computed and printed is the shared
//! model's ([`crate::operator::window`]), as on the sandbox.

use std::time::Duration;

use prometheus_registry::scrape;
use tokio::time::Instant;

use super::api::{ApiServer, pod_proxy_path};
use super::error::{ClusterError, Result};
use super::proxies::{waypoint_gateways, waypoint_pods, ztunnel_pods};
use super::targets::{Objects, targets};
use super::workloads::{name, namespace};
use crate::operator::stat::{Resource, Target};
use crate::operator::window::{Measured, MeasuredRoutes, Scraped, SeenEdges, StatOptions, Window};

/// Where both proxies serve Prometheus metrics (Istio's port), on all addresses.
pub const METRICS_PORT: u16 = 15020;

/// The text exposition format, which the proxies serve whatever is asked.
const METRICS_ACCEPT: &str = "text/plain";

/// A proxy pod as `stat` reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyPod {
    /// `ztunnel <node>`, `waypoint <ns>/<pod>`: as `proxy-status` names it.
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
}

/// The ztunnel DaemonSet's pods and every waypoint Gateway's pods.
pub async fn proxy_pods(api: &ApiServer) -> Result<Vec<ProxyPod>> {
    let proxy = |label: String, pod: &serde_json::Value| ProxyPod {
        name: label,
        namespace: namespace(pod).to_owned(),
        pod: name(pod).to_owned(),
    };
    let mut found: Vec<ProxyPod> = ztunnel_pods(api)
        .await?
        .iter()
        .map(|pod| {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or(name(pod));
            proxy(format!("ztunnel {node}"), pod)
        })
        .collect();
    for gateway in waypoint_gateways(api).await? {
        for pod in waypoint_pods(api, &gateway).await? {
            let label = format!("waypoint {}/{}", namespace(&pod), name(&pod));
            found.push(proxy(label, &pod));
        }
    }
    Ok(found)
}

/// One proxy's samples, through the pod proxy, or why they could not be read.
async fn scrape_one(api: &ApiServer, proxy: &ProxyPod) -> Scraped {
    let path = pod_proxy_path(&proxy.namespace, &proxy.pod, METRICS_PORT, "/metrics");
    let answer = api
        .get_accepting(&path, METRICS_ACCEPT)
        .await
        .map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!(
            "{path} answered {}: {}",
            answer.status,
            answer.text()
        ));
    }
    Ok(scrape::parse(&String::from_utf8_lossy(&answer.body)))
}

/// Every proxy's samples, in the order of `proxies`, asked all at once.
pub async fn scrape_all(api: &ApiServer, proxies: &[ProxyPod]) -> Vec<Scraped> {
    let mut asked = tokio::task::JoinSet::new();
    for (at, proxy) in proxies.iter().enumerate() {
        let (api, proxy) = (api.clone(), proxy.clone());
        asked.spawn(async move { (at, scrape_one(&api, &proxy).await) });
    }
    let mut found: Vec<Scraped> = vec![Err("not scraped".to_owned()); proxies.len()];
    while let Some(done) = asked.join_next().await {
        if let Ok((at, scraped)) = done {
            found[at] = scraped;
        }
    }
    found
}

/// Scrapes every proxy, waits `window` (in real time), scrapes them again; `started` is
/// called with the number of proxies once the first scrapes are done.
pub async fn scrape_window(
    api: &ApiServer,
    window: Duration,
    started: impl FnOnce(usize),
) -> Result<Window> {
    let proxies = proxy_pods(api).await?;
    let names: Vec<String> = proxies.iter().map(|p| p.name.clone()).collect();
    let first = scrape_all(api, &proxies).await;
    let begun = Instant::now();
    started(proxies.len());
    tokio::time::sleep(window).await;
    let second = scrape_all(api, &proxies).await;
    let seconds = begun.elapsed().as_secs_f64();
    Ok(Window::of(&names, first, second, seconds))
}

/// Every namespace, pod, Deployment and Service of the cluster: what the rows of every
/// resource are computed over (the dashboard shows them all at once).
pub async fn all_objects(api: &ApiServer) -> Result<Objects> {
    let list =
        |path: &'static str| async move { api.list(path).await.map(Option::unwrap_or_default) };
    Ok(Objects {
        namespaces: list("/api/v1/namespaces").await?,
        pods: list("/api/v1/pods").await?,
        deployments: list("/apis/apps/v1/deployments").await?,
        services: list("/api/v1/services").await?,
    })
}

/// The objects `stat` of `options` needs, listed in its namespace (all when `None`).
async fn objects(api: &ApiServer, options: &StatOptions) -> Result<Objects> {
    // `stat ns/NAME` needs that namespace's pods only.
    let scope = match (options.resource, &options.namespace, &options.name) {
        (_, Some(ns), _) | (Resource::Namespace, None, Some(ns)) => {
            format!("/namespaces/{ns}")
        }
        _ => String::new(),
    };
    // A kind the API server does not serve lists as none.
    let list =
        move |path: String| async move { api.list(&path).await.map(Option::unwrap_or_default) };
    let mut objects = Objects {
        namespaces: list("/api/v1/namespaces".to_owned()).await?,
        pods: list(format!("/api/v1{scope}/pods")).await?,
        ..Objects::default()
    };
    match options.resource {
        Resource::Deployment => {
            objects.deployments = list(format!("/apis/apps/v1{scope}/deployments")).await?;
        }
        Resource::Service => {
            objects.services = list(format!("/api/v1{scope}/services")).await?;
        }
        Resource::Namespace => {}
    }
    Ok(objects)
}

/// `stat`: the rows of `options` over its window.
pub async fn stat(
    api: &ApiServer,
    options: &StatOptions,
    started: impl FnOnce(usize),
) -> Result<Measured> {
    let found = stat_targets(api, options).await?;
    let window = scrape_window(api, options.window, started).await?;
    Ok(Measured::of(options.resource, &found, window))
}

/// The rows `stat` shows for `options`, with their pods, from the cluster's objects.
pub async fn stat_targets(api: &ApiServer, options: &StatOptions) -> Result<Vec<Target>> {
    let objects = objects(api, options).await?;
    Ok(targets(
        &objects,
        options.resource,
        options.namespace.as_deref(),
        options.name.as_deref(),
    ))
}

/// `edges`: who talked to whom over `window`, with a side in `namespace` (all when `None`).
pub async fn edges(
    api: &ApiServer,
    namespace: Option<&str>,
    window: Duration,
    started: impl FnOnce(usize),
) -> Result<SeenEdges> {
    let window = scrape_window(api, window, started).await?;
    Ok(SeenEdges::of(namespace, window))
}

/// `routes`: the routes of service `name` in `namespace` over `window`; an error when there
/// is no such service.
pub async fn routes(
    api: &ApiServer,
    namespace: &str,
    name: &str,
    window: Duration,
    started: impl FnOnce(usize),
) -> Result<MeasuredRoutes> {
    let path = format!("/api/v1/namespaces/{namespace}/services/{name}");
    if api.object(&path).await?.is_none() {
        return Err(ClusterError::Invalid(format!(
            "service {namespace}/{name} not found"
        )));
    }
    let window = scrape_window(api, window, started).await?;
    Ok(MeasuredRoutes::of(namespace, name, window))
}
