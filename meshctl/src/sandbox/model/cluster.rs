//! The cluster model kept in the state folder: nodes, applied objects, pods
//! and their allocations. Which pods the objects call for, and where they
//! go, is [`super::plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::addresses::netns_name;
use super::control::ControlPlane;
use super::ids::ProcId;
use super::objects::{Object, PodSpec};

/// A node: a network namespace on the fabric bridge that routes for its pods.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Node {
    /// `node1`, `node2`...
    pub name: String,
    /// 1-based index; the node's pod CIDR is 10.244.INDEX.0/24.
    pub index: u32,
    /// Address on the fabric.
    pub ip: Ipv4Addr,
    /// Network namespace name.
    pub netns: String,
    /// Where the next pod IP search starts (avoids reusing a freed IP at once).
    #[serde(default)]
    pub next_host: u8,
}

impl Node {
    /// The node's pod CIDR.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    /// The pods' gateway, configured on every pod-facing veth of the node.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index as u8, 1)
    }
}

/// An applied object with the bookkeeping Kubernetes would add.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Applied {
    /// The object (its `metadata.uid` and `creationTimestamp` are filled in).
    pub object: Object,
    /// Creation time, seconds since the epoch.
    pub created: u64,
}

/// A pod's lifecycle phase as the sandbox sees it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Phase {
    /// Created, processes not yet started.
    Pending,
    /// Every container process is alive.
    Running,
    /// A container process exited.
    Failed,
}

impl Phase {
    /// Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Failed => "Failed",
        }
    }
}

/// Who created a pod.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodOwner {
    /// The Deployment's name.
    pub deployment: String,
    /// Hash of its pod template (`pod-template-hash` label).
    pub template_hash: String,
    /// UID given to the implied ReplicaSet.
    pub replicaset_uid: String,
}

/// A container's process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    /// Container name.
    pub name: String,
    /// The process, once started; `None` for containers without a command.
    pub process: Option<ProcId>,
    /// Times the kubelet prober restarted it after its liveness probe failed.
    #[serde(default)]
    pub restarts: u32,
}

/// A pod: a network namespace on a node, with its processes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Random v4-format UUID.
    pub uid: String,
    /// Node name.
    pub node: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Network namespace name.
    pub netns: String,
    /// Name of the node-side veth.
    pub veth: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Service account ("default" when unset).
    pub service_account: String,
    /// Set for Deployment pods.
    pub owner: Option<PodOwner>,
    /// The pod spec as applied (unknown fields kept).
    pub spec: serde_json::Value,
    /// Hash of `spec`, to notice changes to standalone pods.
    pub spec_hash: String,
    /// Container processes.
    pub containers: Vec<ContainerState>,
    /// Phase.
    pub phase: Phase,
    /// Alive, and its readiness probes pass (without any the sandbox runs: listening on
    /// every declared TCP port).
    pub ready: bool,
    /// A liveness probe is failing (kubelet would be restarting the container).
    #[serde(default)]
    pub unhealthy: bool,
    /// How many times a liveness probe turned to failing.
    #[serde(default)]
    pub liveness_failures: u64,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Its network is set up (the CNI plugins' ADD succeeded): until then the Pod object
    /// carries no IP, as kubelet's does.
    #[serde(default = "network_up")]
    pub network: bool,
}

/// Pods recorded before the field existed had their network.
fn network_up() -> bool {
    true
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Typed spec (validated when applied).
    pub fn typed_spec(&self) -> PodSpec {
        serde_json::from_value(self.spec.clone()).unwrap_or_default()
    }

    /// `spec.terminationGracePeriodSeconds`, capped at [`MAX_TERMINATION_GRACE`]; `None`
    /// when unset (the sandbox then uses its own short default, not Kubernetes' 30 s, so
    /// that tearing down test pods stays quick).
    pub fn termination_grace(&self) -> Option<std::time::Duration> {
        let secs = self.spec.get("terminationGracePeriodSeconds")?.as_u64()?;
        Some(std::time::Duration::from_secs(
            secs.min(MAX_TERMINATION_GRACE.as_secs()),
        ))
    }
}

/// Longest a pod may take to stop after SIGTERM.
pub const MAX_TERMINATION_GRACE: std::time::Duration = std::time::Duration::from_secs(300);

/// The whole sandbox, as saved in `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cluster {
    /// Sandbox name.
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Process whose death tears the sandbox down (`up --owner-pid`).
    pub owner: Option<ProcId>,
    /// The owner-watch process.
    pub reaper: Option<ProcId>,
    /// Fabric namespace joining the nodes.
    pub fabric_netns: String,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Applied objects in apply order (Pods and Deployments included).
    pub objects: Vec<Applied>,
    /// Pods by `namespace/name`.
    pub pods: BTreeMap<String, Pod>,
    /// The control plane and the mesh's system processes, once started.
    #[serde(default)]
    pub control: Option<ControlPlane>,
}

impl Cluster {
    /// A cluster with `nodes` nodes and no objects.
    pub fn new(name: &str, nodes: u32, created: u64) -> Cluster {
        let nodes = (1..=nodes)
            .map(|i| Node {
                name: format!("node{i}"),
                index: i,
                ip: Ipv4Addr::new(172, 18, 0, (i + 1) as u8),
                netns: netns_name(name, &format!("node{i}")),
                next_host: 2,
            })
            .collect();
        Cluster {
            name: name.to_string(),
            created,
            owner: None,
            reaper: None,
            fabric_netns: netns_name(name, "fabric"),
            nodes,
            objects: Vec::new(),
            pods: BTreeMap::new(),
            control: None,
        }
    }

    /// All network namespaces of this sandbox.
    pub fn all_netns(&self) -> Vec<String> {
        let mut v = vec![self.fabric_netns.clone()];
        v.extend(self.nodes.iter().map(|n| n.netns.clone()));
        v.extend(self.pods.values().map(|p| p.netns.clone()));
        v.extend(self.control.iter().map(|c| c.netns.clone()));
        v
    }

    /// Looks a node up by name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Finds an applied object.
    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Applied> {
        self.objects.iter().find(|a| {
            a.object.kind == kind
                && a.object.namespace.as_deref() == namespace
                && a.object.name == name
        })
    }

    /// Applied objects of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Applied> + 'a {
        self.objects.iter().filter(move |a| a.object.kind == kind)
    }

    /// ClusterIPs in use.
    pub fn used_cluster_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.of_kind("Service")
            .filter_map(|a| a.object.value.pointer("/spec/clusterIP"))
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn termination_grace_comes_from_the_spec_and_is_capped() {
        let pod = |spec: serde_json::Value| Pod {
            name: "p".into(),
            namespace: "shop".into(),
            uid: "u".into(),
            node: "node1".into(),
            ip: Ipv4Addr::new(10, 244, 1, 2),
            netns: "ns".into(),
            veth: "veth2".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            service_account: "default".into(),
            owner: None,
            spec,
            spec_hash: String::new(),
            containers: Vec::new(),
            phase: Phase::Pending,
            ready: false,
            unhealthy: false,
            liveness_failures: 0,
            created: 0,
            network: true,
        };
        assert_eq!(pod(serde_json::json!({})).termination_grace(), None);
        assert_eq!(
            pod(serde_json::json!({"terminationGracePeriodSeconds": 5})).termination_grace(),
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            pod(serde_json::json!({"terminationGracePeriodSeconds": 86400})).termination_grace(),
            Some(MAX_TERMINATION_GRACE)
        );
    }
}
