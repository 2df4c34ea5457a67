//! Services as kube-proxy (iptables mode) implements them: in every node
//! namespace, nat rules DNAT a ClusterIP:port to one of the ready endpoints
//! (on any node), chosen with `-m statistic --mode random`.
//!
//! The sandbox owns two chains per node, `MS-SERVICES` (hooked from
//! PREROUTING for pod traffic and OUTPUT for node-local processes) and
//! `MS-POSTROUTING`; each sync rewrites both in one `iptables-restore
//! --noflush` transaction, leaving every other chain alone. No marks and no
//! ports of the mesh's in-pod capture (0x539, 15001/15006/15008) are used.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::process::Command;

use super::netns::{Tools, run};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Cluster, Node, Phase, Pod};
use crate::sandbox::model::objects::{IntOrString, ServiceObject};
use crate::sandbox::model::validate::protocol;

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

/// Rules hooking the sandbox chains, installed once per node.
pub fn render_hooks() -> String {
    "*nat\n:MS-SERVICES - [0:0]\n:MS-POSTROUTING - [0:0]\n\
     -A PREROUTING -j MS-SERVICES\n-A OUTPUT -j MS-SERVICES\n\
     -A POSTROUTING -j MS-POSTROUTING\nCOMMIT\n"
        .to_string()
}

/// The nat rules of one node: DNAT for every service port with endpoints
/// (rule i of n matches with probability 1/(n-i), the last always, which
/// picks each endpoint with probability 1/n), and masquerading for pods that
/// reach themselves through a ClusterIP (a pod drops packets whose source is
/// its own address).
pub fn render_rules(services: &[ServiceView], local_pods: &[Ipv4Addr]) -> String {
    let mut out = String::from("*nat\n:MS-SERVICES - [0:0]\n:MS-POSTROUTING - [0:0]\n");
    for svc in services {
        let Some(vip) = svc.cluster_ip else { continue };
        for port in &svc.ports {
            let n = port.endpoints.len();
            let comment = format!("{}/{}:{}", svc.namespace, svc.name, port.name);
            for (i, (ip, target)) in port.endpoints.iter().enumerate() {
                let _ = write!(
                    out,
                    "-A MS-SERVICES -d {vip}/32 -p {proto} -m {proto} --dport {dport} \
                     -m comment --comment \"{comment}\"",
                    proto = port.protocol,
                    dport = port.port,
                );
                if i + 1 < n {
                    let _ = write!(
                        out,
                        " -m statistic --mode random --probability {:.10}",
                        1.0 / (n - i) as f64
                    );
                }
                let _ = writeln!(out, " -j DNAT --to-destination {ip}:{target}");
            }
        }
    }
    for ip in local_pods {
        let _ = writeln!(out, "-A MS-POSTROUTING -s {ip}/32 -d {ip}/32 -j MASQUERADE");
    }
    out.push_str("COMMIT\n");
    out
}

fn restore(tools: &Tools, node: &Node, rules: &str) -> Result<()> {
    let mut cmd = Command::new(&tools.ip);
    cmd.args(["netns", "exec", &node.netns])
        .arg(&tools.iptables_restore)
        .args(["--noflush", "--wait"]);
    run(&mut cmd, Some(rules)).map(|_| ()).map_err(|e| match e {
        SandboxError::Command { stderr, .. } => SandboxError::Command {
            command: format!("iptables-restore in {}", node.netns),
            stderr,
        },
        other => other,
    })
}

/// Installs the chain hooks in a new node.
pub fn install(tools: &Tools, node: &Node) -> Result<()> {
    restore(tools, node, &render_hooks())
}

/// Rewrites the service rules of every node.
pub fn sync(tools: &Tools, cluster: &Cluster) -> Result<()> {
    let views = services(cluster);
    for node in &cluster.nodes {
        let local: Vec<Ipv4Addr> = cluster
            .pods
            .values()
            .filter(|p| p.node == node.name)
            .map(|p| p.ip)
            .collect();
        restore(tools, node, &render_rules(&views, &local))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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

    fn cluster() -> Cluster {
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

    #[test]
    fn rules_split_evenly_and_skip_headless() {
        let c = cluster();
        let rules = render_rules(&services(&c), &[Ipv4Addr::new(10, 244, 1, 2)]);
        let raw: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains("--dport 81 "))
            .collect();
        assert_eq!(raw.len(), 3);
        assert!(raw[0].contains("--probability 0.3333333333"));
        assert!(raw[1].contains("--probability 0.5000000000"));
        assert!(!raw[2].contains("statistic"));
        assert!(rules.starts_with("*nat\n:MS-SERVICES - [0:0]\n"));
        assert!(
            rules.contains("-A MS-POSTROUTING -s 10.244.1.2/32 -d 10.244.1.2/32 -j MASQUERADE")
        );
        assert!(!rules.contains("None"));
        assert!(rules.ends_with("COMMIT\n"));
        assert!(!rules.contains("0x539") && !rules.contains(":1500"));
    }

    #[test]
    fn unready_pods_are_not_endpoints() {
        let mut c = cluster();
        for p in c.pods.values_mut() {
            p.ready = false;
        }
        let rules = render_rules(&services(&c), &[]);
        assert!(!rules.contains("DNAT"));
    }
}
