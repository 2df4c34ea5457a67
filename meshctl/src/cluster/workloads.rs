//! What Deployments, DaemonSets, Pods, Nodes and Gateways say about the mesh, read from their
//! JSON: pure, so the checks are tested without a cluster.

pub use controller::translate::{GATEWAY_NAME_LABEL, WAYPOINT_CLASS};
use serde_json::Value;

/// The label of the ztunnel DaemonSet's pods (`manifests/ztunnel-daemonset.yaml`).
pub const ZTUNNEL_LABEL: (&str, &str) = ("app", "ztunnel");

/// `metadata.name`.
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace`.
pub fn namespace(object: &Value) -> &str {
    object["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// Whether `object` carries the label `key` = `value`.
pub fn has_label(object: &Value, key: &str, value: &str) -> bool {
    object["metadata"]["labels"][key].as_str() == Some(value)
}

/// A Deployment's (ready, wanted) replicas; available when at least one is ready.
pub fn deployment_replicas(deployment: &Value) -> (u64, u64) {
    let ready = deployment["status"]["readyReplicas"].as_u64().unwrap_or(0);
    let wanted = deployment["spec"]["replicas"].as_u64().unwrap_or(1);
    (ready, wanted)
}

/// A DaemonSet's (ready, desired) pods.
pub fn daemonset_pods(daemonset: &Value) -> (u64, u64) {
    let status = &daemonset["status"];
    (
        status["numberReady"].as_u64().unwrap_or(0),
        status["desiredNumberScheduled"].as_u64().unwrap_or(0),
    )
}

/// Whether a pod's `Ready` condition is true.
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The schedulable nodes on which no ready pod of `pods` runs.
pub fn nodes_without(nodes: &[Value], pods: &[Value]) -> Vec<String> {
    nodes
        .iter()
        .filter(|node| node["spec"]["unschedulable"] != true)
        .map(|node| name(node).to_owned())
        .filter(|node| {
            !pods
                .iter()
                .any(|pod| pod["spec"]["nodeName"].as_str() == Some(node) && pod_ready(pod))
        })
        .collect()
}

/// Whether a Gateway is a waypoint.
pub fn is_waypoint(gateway: &Value) -> bool {
    gateway["spec"]["gatewayClassName"] == WAYPOINT_CLASS
}

/// `Ok` when a Gateway's `Programmed` condition is true, else why not.
pub fn programmed(gateway: &Value) -> Result<(), String> {
    let condition = gateway["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Programmed");
    match condition {
        Some(c) if c["status"] == "True" => Ok(()),
        Some(c) => Err(format!(
            "not programmed ({}): {}",
            c["reason"].as_str().unwrap_or("no reason"),
            c["message"].as_str().unwrap_or_default()
        )),
        None => Err("not programmed: no Programmed condition yet".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: &str, ready: bool) -> Value {
        let status = if ready { "True" } else { "False" };
        json!({"spec": {"nodeName": node},
               "status": {"conditions": [{"type": "Ready", "status": status}]}})
    }

    #[test]
    fn nodes_without_a_ready_pod_are_named_unschedulable_ones_skipped() {
        let nodes = [
            json!({"metadata": {"name": "n1"}}),
            json!({"metadata": {"name": "n2"}}),
            json!({"metadata": {"name": "n3"}}),
            json!({"metadata": {"name": "n4"}, "spec": {"unschedulable": true}}),
        ];
        let pods = [pod("n1", true), pod("n2", false)];
        assert_eq!(nodes_without(&nodes, &pods), ["n2", "n3"]);
    }

    #[test]
    fn counts_and_conditions_read_as_kubernetes_writes_them() {
        let deployment = json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        assert_eq!(deployment_replicas(&deployment), (1, 2));
        assert_eq!(deployment_replicas(&json!({})), (0, 1));
        let ds = json!({"status": {"numberReady": 1, "desiredNumberScheduled": 2}});
        assert_eq!(daemonset_pods(&ds), (1, 2));
        let gateway = |status: &str| {
            json!({"spec": {"gatewayClassName": "istio-waypoint"}, "status": {"conditions": [
                {"type": "Accepted", "status": "True"},
                {"type": "Programmed", "status": status, "reason": "Pending",
                 "message": "no address"}]}})
        };
        assert!(is_waypoint(&gateway("True")));
        assert_eq!(programmed(&gateway("True")), Ok(()));
        assert_eq!(
            programmed(&gateway("False")),
            Err("not programmed (Pending): no address".to_owned())
        );
        assert!(programmed(&json!({})).is_err());
    }
}
