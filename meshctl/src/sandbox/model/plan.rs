//! Reconciling objects with pods, as the model sees it: which pods the
//! applied Pods and Deployments call for (and which must go), and where a
//! new pod goes: its node (replicas spread round-robin), name, UID and IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::addresses::netns_name;
use super::cluster::{Cluster, ContainerState, Node, Phase, Pod, PodOwner};
use super::ids::{Entropy, fnv64, k8s_suffix, uid};
use super::objects::{DeploymentObject, Object, PodObject, PodSpec};

/// A pod the model wants and that does not exist yet.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPod {
    /// Namespace.
    pub namespace: String,
    /// Fixed name (standalone pods) or `None` to generate one.
    pub name: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Owner.
    pub owner: Option<PodOwner>,
    /// Spec as applied.
    pub spec: serde_json::Value,
    /// Hash of `spec`.
    pub spec_hash: String,
    /// Required node (`spec.nodeName`).
    pub node_name: Option<String>,
    /// Service account.
    pub service_account: String,
}

/// What reconciling objects against pods requires.
#[derive(Debug, Default, PartialEq)]
pub struct PodPlan {
    /// Pods to stop and remove (`namespace/name`).
    pub delete: Vec<String>,
    /// Pods to create.
    pub create: Vec<NewPod>,
    /// Standalone pods whose labels or annotations changed in place.
    pub relabel: Vec<Relabel>,
}

/// New labels and annotations for a running pod (no restart, as in
/// Kubernetes).
#[derive(Debug, PartialEq)]
pub struct Relabel {
    /// `namespace/name`.
    pub key: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Cluster {
    /// Compares the objects with the pods: which pods to remove and create.
    pub fn plan_pods(&self) -> PodPlan {
        let mut plan = PodPlan::default();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for applied in &self.objects {
            let obj = &applied.object;
            match obj.kind.as_str() {
                "Pod" => self.plan_pod(obj, &mut plan, &mut wanted),
                "Deployment" => self.plan_deployment(obj, &mut plan, &mut wanted),
                _ => {}
            }
        }
        for key in self.pods.keys() {
            if !wanted.contains(key) && !plan.delete.contains(key) {
                plan.delete.push(key.clone());
            }
        }
        plan
    }

    /// A standalone Pod: kept while its spec is unchanged (its labels and
    /// annotations change in place), replaced when its spec changes.
    fn plan_pod(&self, obj: &Object, plan: &mut PodPlan, wanted: &mut BTreeSet<String>) {
        let ns = obj.namespace.clone().unwrap_or_default();
        let Ok(pod) = obj.typed::<PodObject>() else {
            return;
        };
        let spec = obj.value.get("spec").cloned().unwrap_or_default();
        let spec_hash = hash_value(&spec);
        let key = format!("{ns}/{}", obj.name);
        wanted.insert(key.clone());
        match self.pods.get(&key) {
            Some(p) if p.owner.is_none() && p.spec_hash == spec_hash => {
                let (l, a) = (&pod.metadata.labels, &pod.metadata.annotations);
                if &p.labels != l || &p.annotations != a {
                    plan.relabel.push(Relabel {
                        key,
                        labels: l.clone(),
                        annotations: a.clone(),
                    });
                }
                return;
            }
            Some(_) => plan.delete.push(key),
            None => {}
        }
        plan.create.push(NewPod {
            namespace: ns,
            name: Some(obj.name.clone()),
            labels: pod.metadata.labels,
            annotations: pod.metadata.annotations,
            owner: None,
            service_account: sa_name(&pod.spec),
            node_name: pod.spec.node_name.clone(),
            spec,
            spec_hash,
        });
    }

    /// A Deployment: keeps up to `replicas` of its pods from the current
    /// template (the oldest), and asks for new ones to make up the rest.
    fn plan_deployment(&self, obj: &Object, plan: &mut PodPlan, wanted: &mut BTreeSet<String>) {
        let ns = obj.namespace.clone().unwrap_or_default();
        let Ok(d) = obj.typed::<DeploymentObject>() else {
            return;
        };
        let template = obj
            .value
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        let template_hash = k8s_suffix(fnv64(template.to_string().as_bytes()), 10);
        let spec = template.get("spec").cloned().unwrap_or_default();
        let replicas = d.spec.replicas.unwrap_or(1) as usize;
        let mut current: Vec<&Pod> = self
            .pods
            .values()
            .filter(|p| p.namespace == ns)
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.deployment == obj.name))
            .collect();
        // Keep the oldest pods of the current template; newest go first.
        current.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        let mut kept = 0;
        let mut rs_uid = None;
        for p in current {
            let owner = p.owner.as_ref();
            let same = owner.is_some_and(|o| o.template_hash == template_hash);
            if same && kept < replicas {
                kept += 1;
                wanted.insert(p.key());
                rs_uid = owner.map(|o| o.replicaset_uid.clone());
            }
        }
        let mut labels = d.spec.template.metadata.labels.clone();
        labels.insert("pod-template-hash".into(), template_hash.clone());
        for _ in kept..replicas {
            plan.create.push(NewPod {
                namespace: ns.clone(),
                name: None,
                labels: labels.clone(),
                annotations: d.spec.template.metadata.annotations.clone(),
                owner: Some(PodOwner {
                    deployment: obj.name.clone(),
                    template_hash: template_hash.clone(),
                    replicaset_uid: rs_uid.clone().unwrap_or_default(),
                }),
                service_account: sa_name(&d.spec.template.spec),
                node_name: d.spec.template.spec.node_name.clone(),
                spec: spec.clone(),
                spec_hash: hash_value(&spec),
            });
        }
    }

    /// Chooses a node, name, UID and IP for a new pod and records it
    /// (phase Pending). Replicas of a Deployment spread over nodes: fewest
    /// replicas of the same Deployment first, then fewest pods, then lowest
    /// index.
    pub fn place(&mut self, new: NewPod, now: u64, rng: &mut dyn Entropy) -> Result<Pod, String> {
        let node_idx = match &new.node_name {
            Some(name) => self
                .nodes
                .iter()
                .position(|n| &n.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                    format!(
                        "spec.nodeName: no node {name:?} (nodes: {})",
                        names.join(", ")
                    )
                })?,
            None => {
                let score = |n: &Node| {
                    let on_node = self.pods.values().filter(|p| p.node == n.name);
                    let same = on_node
                        .clone()
                        .filter(|p| {
                            p.namespace == new.namespace
                                && p.owner.as_ref().map(|o| &o.deployment)
                                    == new.owner.as_ref().map(|o| &o.deployment)
                                && new.owner.is_some()
                        })
                        .count();
                    (same, on_node.count(), n.index)
                };
                let best = self.nodes.iter().enumerate().min_by_key(|(_, n)| score(n));
                best.map(|(i, _)| i).ok_or("the sandbox has no nodes")?
            }
        };
        let name = match &new.name {
            Some(n) => n.clone(),
            None => self.generate_pod_name(&new, rng),
        };
        let ip = self.allocate_pod_ip(node_idx)?;
        let mut owner = new.owner.clone();
        if let Some(o) = owner.as_mut().filter(|o| o.replicaset_uid.is_empty()) {
            o.replicaset_uid = uid(rng);
        }
        let spec = PodSpec::default();
        let typed: PodSpec = serde_json::from_value(new.spec.clone()).unwrap_or(spec);
        let node = &self.nodes[node_idx];
        let pod = Pod {
            netns: netns_name(&self.name, &format!("{}.{name}", new.namespace)),
            veth: format!("veth{}", ip.octets()[3]),
            name,
            namespace: new.namespace.clone(),
            uid: uid(rng),
            node: node.name.clone(),
            ip,
            labels: new.labels.clone(),
            annotations: new.annotations.clone(),
            service_account: new.service_account.clone(),
            owner,
            spec: new.spec.clone(),
            spec_hash: new.spec_hash.clone(),
            containers: typed
                .containers
                .iter()
                .map(|c| ContainerState {
                    name: c.name.clone(),
                    process: None,
                    restarts: 0,
                })
                .collect(),
            phase: Phase::Pending,
            ready: false,
            unhealthy: false,
            liveness_failures: 0,
            created: now,
            // Set up by `reconcile` (the namespace, then the CNI chain).
            network: false,
        };
        self.pods.insert(pod.key(), pod.clone());
        Ok(pod)
    }

    fn generate_pod_name(&self, new: &NewPod, rng: &mut dyn Entropy) -> String {
        let base = match &new.owner {
            Some(o) => format!("{}-{}", o.deployment, o.template_hash),
            None => "pod".to_string(),
        };
        loop {
            let r = rng.bytes(8);
            let n = u64::from_le_bytes(r.try_into().unwrap_or([0; 8]));
            let name = format!("{base}-{}", k8s_suffix(n, 5));
            if !self.pods.contains_key(&format!("{}/{name}", new.namespace)) {
                return name;
            }
        }
    }

    fn allocate_pod_ip(&mut self, node_idx: usize) -> Result<Ipv4Addr, String> {
        let node = &self.nodes[node_idx];
        let used: BTreeSet<u8> = self
            .pods
            .values()
            .filter(|p| p.node == node.name)
            .map(|p| p.ip.octets()[3])
            .collect();
        let start = node.next_host.clamp(2, 254);
        let host = (start..=254)
            .chain(2..start)
            .find(|h| !used.contains(h))
            .ok_or_else(|| format!("node {} has no free pod IP (253 pods)", node.name))?;
        let node = &mut self.nodes[node_idx];
        node.next_host = if host >= 254 { 2 } else { host + 1 };
        Ok(Ipv4Addr::new(10, 244, node.index as u8, host))
    }
}

fn sa_name(spec: &PodSpec) -> String {
    spec.service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

fn hash_value(v: &serde_json::Value) -> String {
    format!("{:016x}", fnv64(v.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::cluster::Applied;
    use crate::sandbox::model::ids::tests::Counter;
    use crate::sandbox::model::manifest::parse_documents;

    fn cluster_with(yaml: &str, nodes: u32) -> Cluster {
        let mut c = Cluster::new("t", nodes, 0);
        for object in parse_documents(yaml, "t.yaml").unwrap() {
            c.objects.push(Applied { object, created: 0 });
        }
        c
    }

    fn deployment(replicas: u32, version: &str) -> String {
        format!(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web, version: {version}}}}}
    spec: {{containers: [{{name: c, command: [sleep, "1"]}}]}}
"#
        )
    }

    fn apply_plan(c: &mut Cluster, rng: &mut Counter) {
        let plan = c.plan_pods();
        for key in plan.delete {
            c.pods.remove(&key);
        }
        for new in plan.create {
            c.place(new, 1, rng).unwrap();
        }
    }

    #[test]
    fn replicas_spread_across_nodes_and_names_look_like_kubernetes() {
        let mut c = cluster_with(&deployment(4, "v1"), 2);
        let mut rng = Counter(0);
        apply_plan(&mut c, &mut rng);
        let per_node = |n: &str| c.pods.values().filter(|p| p.node == n).count();
        assert_eq!((per_node("node1"), per_node("node2")), (2, 2));
        for p in c.pods.values() {
            let parts: Vec<&str> = p.name.rsplitn(3, '-').collect();
            assert_eq!(parts.len(), 3, "{}", p.name);
            assert_eq!(parts[0].len(), 5);
            assert_eq!(parts[1].len(), 10);
            assert_eq!(
                p.labels.get("pod-template-hash").map(|s| s.as_str()),
                Some(parts[1])
            );
            assert_eq!(p.uid.len(), 36);
            assert_eq!(&p.uid[14..15], "4");
        }
        let ips: BTreeSet<_> = c.pods.values().map(|p| p.ip).collect();
        assert_eq!(ips.len(), 4);
        assert!(
            c.pods
                .values()
                .all(|p| p.ip.octets()[2] as usize == p.node[4..].parse::<usize>().unwrap())
        );
    }

    #[test]
    fn scaling_keeps_existing_pods_and_template_change_replaces_them() {
        let mut c = cluster_with(&deployment(2, "v1"), 2);
        let mut rng = Counter(0);
        apply_plan(&mut c, &mut rng);
        let before: BTreeSet<String> = c.pods.keys().cloned().collect();
        c.objects = cluster_with(&deployment(3, "v1"), 2).objects;
        let plan = c.plan_pods();
        assert!(plan.delete.is_empty());
        assert_eq!(plan.create.len(), 1);
        apply_plan(&mut c, &mut rng);
        assert!(before.iter().all(|k| c.pods.contains_key(k)));
        c.objects = cluster_with(&deployment(1, "v1"), 2).objects;
        assert_eq!(c.plan_pods().delete.len(), 2);
        c.objects = cluster_with(&deployment(3, "v2"), 2).objects;
        let plan = c.plan_pods();
        assert_eq!((plan.delete.len(), plan.create.len()), (3, 3));
        c.objects.clear();
        assert_eq!(c.plan_pods().delete.len(), 3);
    }

    #[test]
    fn standalone_pods_honour_node_name_and_changes() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: b}}\nspec: {nodeName: node2, containers: [{name: c}]}\n";
        let mut c = cluster_with(yaml, 2);
        let mut rng = Counter(0);
        apply_plan(&mut c, &mut rng);
        let p = &c.pods["default/p"];
        assert_eq!(
            (p.node.as_str(), p.ip),
            ("node2", Ipv4Addr::new(10, 244, 2, 2))
        );
        assert_eq!(p.netns, "ms-t.default.p");
        assert_eq!(c.plan_pods(), PodPlan::default());
        c.objects = cluster_with(&yaml.replace("{a: b}", "{a: c}"), 2).objects;
        assert_eq!(c.plan_pods().relabel.len(), 1);
        c.objects = cluster_with(&yaml.replace("node2", "node9"), 2).objects;
        let new = c.plan_pods().create.remove(0);
        assert!(c.place(new, 1, &mut rng).unwrap_err().contains("node9"));
    }

    #[test]
    fn ip_allocation_does_not_reuse_a_freed_ip_at_once() {
        let mut c = Cluster::new("t", 1, 0);
        let ip1 = c.allocate_pod_ip(0).unwrap();
        let ip2 = c.allocate_pod_ip(0).unwrap();
        assert_eq!((ip1.octets()[3], ip2.octets()[3]), (2, 3));
        assert_eq!(c.nodes[0].next_host, 4);
    }
}
