//! Services as the cluster resolves them: each Service with its ClusterIP
//! and, per port, the ready pods it selects (named target ports resolved per
//! pod). What kube-proxy rules, hosts files and `get svc` are made from.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::cluster::{Cluster, Phase, Pod};
use super::objects::{IntOrString, ServiceObject};
use super::validate::protocol;

/// A Service with its resolved endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP; `None` for headless services.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Ports with their endpoints.
    pub ports: Vec<PortView>,
    /// Ready pods selected by the service (what a headless name resolves to).
    pub addresses: Vec<Ipv4Addr>,
}

/// One service port.
#[derive(Debug, Clone, PartialEq)]
pub struct PortView {
    /// Port name ("" when unnamed).
    pub name: String,
    /// Port on the ClusterIP.
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: &'static str,
    /// Target port as written (number or name), for display.
    pub target: String,
    /// Ready endpoints: pod IP and resolved target port.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// True when `labels` carry every `selector` pair.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every Service of the cluster with its ready endpoints, in name order.
pub fn services(cluster: &Cluster) -> Vec<ServiceView> {
    let mut views = Vec::new();
    for applied in cluster.of_kind("Service") {
        let obj = &applied.object;
        let Ok(svc) = obj.typed::<ServiceObject>() else {
            continue;
        };
        let namespace = obj.namespace.clone().unwrap_or_default();
        let cluster_ip = svc
            .spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok());
        let selected: Vec<&Pod> = match &svc.spec.selector {
            Some(sel) if !sel.is_empty() => cluster
                .pods
                .values()
                .filter(|p| p.namespace == namespace && p.phase == Phase::Running && p.ready)
                .filter(|p| selects(sel, &p.labels))
                .collect(),
            // No selector: endpoints are managed elsewhere, none here.
            _ => Vec::new(),
        };
        let ports = svc
            .spec
            .ports
            .iter()
            .map(|sp| {
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                let proto = protocol(sp.protocol.as_deref()).unwrap_or("tcp");
                let endpoints = selected
                    .iter()
                    .filter_map(|p| Some((p.ip, resolve_target(p, &target, proto)?)))
                    .collect();
                PortView {
                    name: sp.name.clone().unwrap_or_default(),
                    port: sp.port,
                    protocol: proto,
                    target: target.to_string(),
                    endpoints,
                }
            })
            .collect();
        views.push(ServiceView {
            namespace,
            name: obj.name.clone(),
            cluster_ip,
            ports,
            addresses: selected.iter().map(|p| p.ip).collect(),
        });
    }
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    views
}

/// A named targetPort is looked up in the pod's own container ports (pods
/// may number it differently); pods without that name are not endpoints.
fn resolve_target(pod: &Pod, target: &IntOrString, proto: &str) -> Option<u16> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::Str(name) => pod
            .typed_spec()
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && protocol(p.protocol.as_deref()).unwrap_or("tcp") == proto
            })
            .map(|p| p.container_port),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sandbox::model::cluster::Applied;
    use crate::sandbox::model::ids::tests::Counter;
    use crate::sandbox::model::manifest::parse_documents;

    const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: raw, port: 81, targetPort: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, selector: {app: db}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8081}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: d, namespace: other, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: e, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c}]}
"#;

    /// Services and pods of two namespaces, every pod placed, running and
    /// ready.
    pub(crate) fn cluster() -> Cluster {
        let mut c = Cluster::new("t", 2, 0);
        for object in parse_documents(YAML, "t.yaml").unwrap() {
            c.objects.push(Applied { object, created: 0 });
        }
        let plan = c.plan_pods();
        for new in plan.create {
            c.place(new, 0, &mut Counter(7)).unwrap();
        }
        for p in c.pods.values_mut() {
            p.phase = Phase::Running;
            p.ready = true;
        }
        c
    }

    #[test]
    fn endpoints_resolve_named_ports_per_pod_within_the_namespace() {
        let c = cluster();
        let views = services(&c);
        let web = views.iter().find(|s| s.name == "web").unwrap();
        let ip = |n: &str| c.pods[&format!("shop/{n}")].ip;
        let http: Vec<_> = web.ports[0].endpoints.clone();
        assert_eq!(http, vec![(ip("a"), 8080), (ip("b"), 8081)]);
        assert_eq!(web.ports[1].endpoints.len(), 3);
        let db = views.iter().find(|s| s.name == "db").unwrap();
        assert_eq!((db.cluster_ip, db.addresses.clone()), (None, vec![ip("e")]));
    }
}
