//! The `Node` this client announces, as Istio's ztunnel builds it.

use api::core::Node;
use api::prost_types::{Struct, Value, value::Kind};

/// Identifies this client to the controller (`Node.id` and metadata).
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// `Node.id`, Istio style: `<role>~<ip>~<name>.<namespace>~<namespace>.svc.cluster.local`
    /// (see [`node_id`]).
    pub node_id: String,
    /// The Kubernetes node name (`NODE_NAME` metadata).
    pub node_name: String,
    /// Cluster id metadata.
    pub cluster_id: String,
}

/// The role prefix of the node id; the controller (like istiod) recognises node proxies by it.
pub const ROLE: &str = "ztunnel";

/// Istio's node id for a ztunnel pod: `ztunnel~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
pub fn node_id(ip: &str, pod_name: &str, namespace: &str) -> String {
    format!("{ROLE}~{ip}~{pod_name}.{namespace}~{namespace}.svc.cluster.local")
}

/// The parts of an Istio-style node id: (ip, pod name, namespace).
fn parse_node_id(id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = id.split('~');
    let (Some(_role), Some(ip), Some(pod), Some(domain), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let namespace = domain.split('.').next().unwrap_or_default();
    let name = pod
        .strip_suffix(namespace)
        .and_then(|p| p.strip_suffix('.'))
        .unwrap_or(pod);
    Some((ip, name, namespace))
}

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_owned())),
    }
}

/// The `Node`: id plus the metadata Istio's ztunnel sends (`NAME`, `NAMESPACE`,
/// `INSTANCE_IPS`, `NODE_NAME`; `CLUSTER_ID` as its deployment sets it through
/// `ISTIO_META_CLUSTER_ID`).
pub(super) fn node(client: &ClientIdentity) -> Node {
    let (ip, name, namespace) = parse_node_id(&client.node_id).unwrap_or_default();
    let fields = [
        ("NAME", name),
        ("NAMESPACE", namespace),
        ("INSTANCE_IPS", ip),
        ("NODE_NAME", client.node_name.as_str()),
        ("CLUSTER_ID", client.cluster_id.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), string(v)))
    .collect();
    Node {
        id: client.node_id.clone(),
        metadata: Some(Struct { fields }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(node: &'a Node, key: &str) -> &'a str {
        match &node.metadata.as_ref().unwrap().fields[key].kind {
            Some(Kind::StringValue(s)) => s,
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn node_carries_istio_metadata() {
        let client = ClientIdentity {
            node_id: node_id("10.0.0.5", "ztunnel-abcde", "istio-system"),
            node_name: "node1".into(),
            cluster_id: "Kubernetes".into(),
        };
        assert_eq!(
            client.node_id,
            "ztunnel~10.0.0.5~ztunnel-abcde.istio-system~istio-system.svc.cluster.local"
        );
        let node = node(&client);
        assert_eq!(node.id, client.node_id);
        assert_eq!(field(&node, "NAME"), "ztunnel-abcde");
        assert_eq!(field(&node, "NAMESPACE"), "istio-system");
        assert_eq!(field(&node, "INSTANCE_IPS"), "10.0.0.5");
        assert_eq!(field(&node, "NODE_NAME"), "node1");
        assert_eq!(field(&node, "CLUSTER_ID"), "Kubernetes");
    }

    #[test]
    fn free_form_ids_still_carry_node_and_cluster() {
        let node = node(&ClientIdentity {
            node_id: "ztunnel-on-node2".into(),
            node_name: "node2".into(),
            cluster_id: "c1".into(),
        });
        assert_eq!(node.id, "ztunnel-on-node2");
        assert_eq!(field(&node, "NAME"), "");
        assert_eq!(field(&node, "NODE_NAME"), "node2");
        assert_eq!(field(&node, "CLUSTER_ID"), "c1");
    }
}
