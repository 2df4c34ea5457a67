//! The sandbox's proxies as the operator's verbs reach them: each node's ztunnel and each
//! waypoint pod, by the network namespace their admin ports listen in.

use std::time::Duration;

use controller::deploy::waypoints::GATEWAY_NAME_LABEL;

use super::sandbox::Sandbox;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::host::admin;
use crate::sandbox::model::control::Component;

/// Where both proxies answer `/config_dump` (Istio's port; localhost only).
pub const ADMIN_PORT: u16 = 15000;
/// Where both proxies serve Prometheus metrics (Istio's port).
pub const METRICS_PORT: u16 = 15020;
/// Where both proxies answer `/healthz/ready` (Istio's port).
pub const READY_PORT: u16 = 15021;
/// How long one request to a proxy may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// One proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// `ztunnel node1`, `waypoint shop/waypoint-...`.
    pub name: String,
    /// The network namespace its ports listen in.
    pub netns: String,
    /// `<role>~<pod>.<namespace>`: how it names itself in its xDS node ID, without the IP.
    pub node_key: String,
}

/// Every node's ztunnel (started or not) and every waypoint pod.
pub fn all(sb: &Sandbox) -> Vec<Proxy> {
    let mut proxies: Vec<Proxy> = sb
        .cluster
        .nodes
        .iter()
        .filter_map(|node| ztunnel(sb, &node.name).ok())
        .collect();
    proxies.extend(waypoints(sb).into_iter().map(|(proxy, _, _)| proxy));
    proxies
}

/// Every waypoint pod, with its namespace and pod name.
pub fn waypoints(sb: &Sandbox) -> Vec<(Proxy, String, String)> {
    sb.cluster
        .pods
        .values()
        .filter(|pod| pod.labels.contains_key(GATEWAY_NAME_LABEL))
        .map(|pod| {
            let proxy = Proxy {
                name: format!("waypoint {}/{}", pod.namespace, pod.name),
                netns: pod.netns.clone(),
                node_key: format!("router~{}.{}", pod.name, pod.namespace),
            };
            (proxy, pod.namespace.clone(), pod.name.clone())
        })
        .collect()
}

/// The ztunnel of `node`.
pub fn ztunnel(sb: &Sandbox, node: &str) -> Result<Proxy> {
    let control = sb.control()?;
    let process = control
        .find(&Component::Ztunnel(node.to_owned()))
        .ok_or_else(|| {
            let nodes: Vec<&str> = sb.cluster.nodes.iter().map(|n| n.name.as_str()).collect();
            SandboxError::Invalid(format!(
                "no ztunnel on {node:?}: the nodes are {}",
                nodes.join(", ")
            ))
        })?;
    Ok(Proxy {
        name: format!("ztunnel {node}"),
        netns: process.netns.clone(),
        // Outside Kubernetes the ztunnel names itself `ztunnel-<node>` in istio-system.
        node_key: format!("ztunnel~ztunnel-{node}.istio-system"),
    })
}

/// A waypoint pod of namespace `namespace`: the pod called `name`, or the first pod of the
/// waypoint (Gateway) called `name`.
pub fn waypoint(sb: &Sandbox, namespace: &str, name: &str) -> Result<Proxy> {
    sb.cluster
        .pods
        .values()
        .filter(|pod| pod.namespace == namespace)
        .filter_map(|pod| Some((pod, pod.labels.get(GATEWAY_NAME_LABEL)?)))
        .find(|(pod, gateway)| pod.name == name || gateway.as_str() == name)
        .map(|(pod, _)| Proxy {
            name: format!("waypoint {namespace}/{}", pod.name),
            netns: pod.netns.clone(),
            node_key: format!("router~{}.{namespace}", pod.name),
        })
        .ok_or_else(|| {
            SandboxError::Invalid(format!(
                "no waypoint {namespace}/{name}: see `meshctl get pods -n {namespace}`"
            ))
        })
}

/// GETs `path` from `port` of `proxy`: the body of a 200, else why not.
pub fn get(proxy: &Proxy, port: u16, path: &str) -> std::result::Result<String, String> {
    let answer = admin::get(&proxy.netns, port, path, TIMEOUT).map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    match answer.status {
        200 => Ok(body),
        status => Err(format!("{path} answered {status}: {}", body.trim())),
    }
}

/// `Ok` when `proxy` answers `/healthz/ready` with 200, else why not (its reasons on one line).
pub fn ready(proxy: &Proxy) -> std::result::Result<(), String> {
    get(proxy, READY_PORT, "/healthz/ready")
        .map(|_| ())
        .map_err(|why| why.replace('\n', "; "))
}

/// The config dump of `proxy`.
pub fn config_dump(proxy: &Proxy) -> Result<serde_json::Value> {
    let fail = |why: String| {
        SandboxError::Invalid(format!(
            "{}: config dump: {why} (is it running? `meshctl check`)",
            proxy.name
        ))
    };
    let body = get(proxy, ADMIN_PORT, "/config_dump").map_err(fail)?;
    serde_json::from_str(&body).map_err(|e| fail(e.to_string()))
}
