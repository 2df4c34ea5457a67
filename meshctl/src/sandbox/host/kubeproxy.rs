//! Services as kube-proxy (iptables mode) implements them: in every node
//! namespace, nat rules DNAT a ClusterIP:port to one of the ready endpoints
//! (on any node), chosen with `-m statistic --mode random`.
//!
//! The sandbox owns two chains per node, `MS-SERVICES` (hooked from
//! PREROUTING for pod traffic and OUTPUT for node-local processes) and
//! `MS-POSTROUTING`; each sync rewrites both in one `iptables-restore
//! --noflush` transaction, leaving every other chain alone. No marks and no
//! ports of the mesh's in-pod capture (0x539, 15001/15006/15008) are used.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::process::Command;

use super::netns::{Tools, run};
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Cluster, Node};
use crate::sandbox::model::services::{ServiceView, services};

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

/// The node's `nat` table as `iptables-save` prints it (where `check` looks for the node
/// agent's probe SNAT rule).
pub fn nat_table(tools: &Tools, node: &Node) -> Result<String> {
    let save = tools.iptables_restore.with_file_name("iptables-save");
    let mut cmd = Command::new(&tools.ip);
    cmd.args(["netns", "exec", &node.netns])
        .arg(save)
        .args(["-t", "nat"]);
    run(&mut cmd, None)
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
    use crate::sandbox::model::services::tests::cluster;

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
