//! The mesh's proxies as a cluster runs them (the ztunnel DaemonSet's pods, each waypoint
//! Gateway's pods), the names the controller knows them by, and the controller's
//! `/debug/syncz` read through the API server's service proxy.

use serde_json::Value;

use super::api::{ApiServer, SYSTEM_NAMESPACE};
use super::error::{ClusterError, Result};
use super::workloads::{
    GATEWAY_NAME_LABEL, ZTUNNEL_LABEL, has_label, is_waypoint, name, namespace,
};
use crate::operator::proxy_status::{self, Expected, Status};

/// The controller's Service (`manifests/controller.yaml`).
pub const CONTROLLER_SERVICE: &str = "istiod";
/// The controller's Deployment.
pub const CONTROLLER_DEPLOYMENT: &str = "controller";
/// The controller's admin port: `/ready`, `/debug/syncz`.
pub use crate::sandbox::model::control::ADMIN_PORT;
/// The ztunnel DaemonSet (`manifests/ztunnel-daemonset.yaml`).
pub const ZTUNNEL_DAEMONSET: &str = "ztunnel";
/// The Gateway API's Gateways, in every namespace.
pub const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";

/// `GET` of the controller's admin endpoint through the service proxy.
pub async fn controller_get(api: &ApiServer, path: &str) -> Result<super::api::Answer> {
    api.service_get(SYSTEM_NAMESPACE, CONTROLLER_SERVICE, ADMIN_PORT, path)
        .await
}

/// The ztunnel pods.
pub async fn ztunnel_pods(api: &ApiServer) -> Result<Vec<Value>> {
    let (key, value) = ZTUNNEL_LABEL;
    let path = format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/pods?labelSelector={key}%3D{value}");
    let pods = api.list(&path).await?.unwrap_or_default();
    Ok(pods
        .into_iter()
        .filter(|pod| has_label(pod, key, value))
        .collect())
}

/// The Gateways of class `istio-waypoint` (none when the Gateway API is not installed).
pub async fn waypoint_gateways(api: &ApiServer) -> Result<Vec<Value>> {
    let gateways = api.list(GATEWAYS).await?.unwrap_or_default();
    Ok(gateways.into_iter().filter(is_waypoint).collect())
}

/// The pods of a waypoint Gateway.
pub async fn waypoint_pods(api: &ApiServer, gateway: &Value) -> Result<Vec<Value>> {
    let (ns, gw) = (namespace(gateway), name(gateway));
    let path = format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector={}%3D{gw}",
        GATEWAY_NAME_LABEL.replace('/', "%2F")
    );
    let pods = api.list(&path).await?.unwrap_or_default();
    Ok(pods
        .into_iter()
        .filter(|pod| has_label(pod, GATEWAY_NAME_LABEL, gw))
        .collect())
}

/// The proxies the controller should have as clients, named as `proxy-status` shows them:
/// `ztunnel <node>` (node ID `ztunnel~<ip>~<pod>.istio-system~…`) and
/// `waypoint <ns>/<pod>` (`router~<ip>~<pod>.<ns>~…`).
pub fn expected(ztunnels: &[Value], waypoints: &[Value]) -> Vec<Expected> {
    let ztunnels = ztunnels.iter().map(|pod| Expected {
        name: format!(
            "ztunnel {}",
            pod["spec"]["nodeName"].as_str().unwrap_or(name(pod))
        ),
        key: format!("ztunnel~{}.{}", name(pod), namespace(pod)),
    });
    let waypoints = waypoints.iter().map(|pod| Expected {
        name: format!("waypoint {}/{}", namespace(pod), name(pod)),
        key: format!("router~{}.{}", name(pod), namespace(pod)),
    });
    ztunnels.chain(waypoints).collect()
}

/// Every proxy of the cluster with how far it is synced, from the controller's
/// `/debug/syncz`. Certificate expiry is not known: the proxies' own admin endpoints listen
/// on their pods' loopback, which the API server does not reach.
pub async fn statuses(api: &ApiServer) -> Result<Vec<Status>> {
    let mut waypoints = Vec::new();
    for gateway in waypoint_gateways(api).await? {
        waypoints.extend(waypoint_pods(api, &gateway).await?);
    }
    let expected = expected(&ztunnel_pods(api).await?, &waypoints);
    let syncz = syncz(api).await?;
    let dumps = vec![None; expected.len()];
    Ok(proxy_status::statuses(&expected, &syncz, &dumps))
}

/// The controller's `/debug/syncz`.
pub async fn syncz(api: &ApiServer) -> Result<Value> {
    let answer = controller_get(api, "/debug/syncz").await?;
    if answer.status != 200 {
        return Err(ClusterError::Invalid(format!(
            "the controller's /debug/syncz (through the service proxy of \
             {SYSTEM_NAMESPACE}/{CONTROLLER_SERVICE}:{ADMIN_PORT}) answered {}: {}",
            answer.status,
            answer.text()
        )));
    }
    serde_json::from_slice(&answer.body)
        .map_err(|e| ClusterError::Invalid(format!("the controller's /debug/syncz: {e}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn proxies_are_keyed_as_their_node_ids_name_them() {
        let ztunnel = json!({"metadata": {"name": "ztunnel-abcde", "namespace": "istio-system"},
                             "spec": {"nodeName": "node1"}});
        let waypoint = json!({"metadata": {"name": "waypoint-7f9-x2", "namespace": "shop"}});
        assert_eq!(
            expected(&[ztunnel], &[waypoint]),
            [
                Expected {
                    name: "ztunnel node1".into(),
                    key: "ztunnel~ztunnel-abcde.istio-system".into(),
                },
                Expected {
                    name: "waypoint shop/waypoint-7f9-x2".into(),
                    key: "router~waypoint-7f9-x2.shop".into(),
                },
            ]
        );
    }
}
