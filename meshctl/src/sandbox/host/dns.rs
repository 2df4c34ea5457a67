//! Name resolution inside pods through hosts files.
//!
//! `ip netns exec NS` (for system processes) and `meshctl
//! sandbox-container` (for pods) bind-mount `/etc/netns/NS/hosts` and
//! `resolv.conf` over `/etc` for the process they start. glibc's `files`
//! backend matches names exactly (search domains only apply to DNS), so
//! every form a pod may use is written out: `svc`, `svc.ns` and `svc.ns.svc.cluster.local`, the
//! short one only in the service's own namespace. Files are rewritten in
//! place (same inode) because running processes see the bind-mounted inode,
//! not the path.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Cluster, Pod};
use crate::sandbox::model::services::ServiceView;

/// Cluster DNS domain.
pub const DOMAIN: &str = "cluster.local";
/// Per-namespace files for `ip netns exec`.
pub const ETC_NETNS: &str = "/etc/netns";

/// The folder `ip netns exec` reads for namespace `netns`.
pub fn etc_dir(netns: &str) -> PathBuf {
    Path::new(ETC_NETNS).join(netns)
}

/// The hosts file of a process in Kubernetes namespace `namespace`
/// (`None` for node-level processes), optionally naming the pod itself.
pub fn render_hosts(
    sandbox: &str,
    namespace: Option<&str>,
    own: Option<(&str, Ipv4Addr)>,
    services: &[ServiceView],
) -> String {
    let mut out = format!(
        "# Written by meshctl for sandbox {sandbox}; rewritten when services change.\n\
         127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    if let Some((name, ip)) = own {
        let _ = writeln!(out, "{ip}\t{name}");
    }
    for svc in services {
        let fqdn = format!("{}.{}.svc.{DOMAIN}", svc.name, svc.namespace);
        let mut names = format!("{fqdn}\t{}.{}", svc.name, svc.namespace);
        if namespace == Some(svc.namespace.as_str()) {
            names = format!("{names}\t{}", svc.name);
        }
        let ips: Vec<Ipv4Addr> = match svc.cluster_ip {
            Some(ip) => vec![ip],
            None => svc.addresses.clone(),
        };
        for ip in ips {
            let _ = writeln!(out, "{ip}\t{names}");
        }
    }
    out
}

/// resolv.conf with Kubernetes' search path, for resolvers that use DNS. A node's also names
/// a nameserver on its loopback, where none listens (names resolve through the hosts file):
/// node proxies whose resolver refuses to start without one (Istio's ztunnel) start, and a
/// lookup the hosts file cannot answer is refused at once.
pub fn render_resolv(namespace: Option<&str>) -> String {
    let (search, nameserver) = match namespace {
        Some(ns) => (format!("{ns}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}"), ""),
        None => (DOMAIN.to_string(), "nameserver 127.0.0.1\n"),
    };
    format!("# Written by meshctl.\n{nameserver}search {search}\noptions ndots:5\n")
}

/// Writes `content` to `path` keeping its inode: overwrite from the start,
/// then cut to length (never an empty file for a concurrent reader).
fn write_in_place(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.set_len(content.len() as u64)?;
    Ok(())
}

/// Writes the files of one namespace (before its first process starts, so
/// `ip netns exec` finds them to mount).
pub fn write_files(netns: &str, hosts: &str, resolv: &str) -> Result<()> {
    let dir = etc_dir(netns);
    let ctx = format!("writing {}", dir.display());
    std::fs::create_dir_all(&dir).map_err(SandboxError::io(ctx.clone()))?;
    write_in_place(&dir.join("hosts"), hosts).map_err(SandboxError::io(ctx.clone()))?;
    write_in_place(&dir.join("resolv.conf"), resolv).map_err(SandboxError::io(ctx))
}

/// Rewrites the files of every pod and node.
pub fn sync(cluster: &Cluster, services: &[ServiceView]) -> Result<()> {
    for pod in cluster.pods.values() {
        write_pod(cluster, pod, services)?;
    }
    for node in &cluster.nodes {
        let hosts = render_hosts(&cluster.name, None, Some((&node.name, node.ip)), services);
        write_files(&node.netns, &hosts, &render_resolv(None))?;
    }
    Ok(())
}

/// Writes one pod's files.
pub fn write_pod(cluster: &Cluster, pod: &Pod, services: &[ServiceView]) -> Result<()> {
    let hosts = render_hosts(
        &cluster.name,
        Some(&pod.namespace),
        Some((&pod.name, pod.ip)),
        services,
    );
    write_files(&pod.netns, &hosts, &render_resolv(Some(&pod.namespace)))
}

/// Removes the files of namespaces.
pub fn remove(names: &[String]) {
    for n in names {
        let _ = std::fs::remove_dir_all(etc_dir(n));
    }
}

/// `/etc/netns` entries starting with `prefix` (leftovers included).
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(ETC_NETNS) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::services::PortView;

    fn svc(ns: &str, name: &str, ip: Option<Ipv4Addr>, addrs: Vec<Ipv4Addr>) -> ServiceView {
        ServiceView {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip,
            ports: vec![PortView {
                name: String::new(),
                port: 80,
                protocol: "tcp",
                target: "80".into(),
                endpoints: vec![],
            }],
            addresses: addrs,
        }
    }

    #[test]
    fn hosts_have_all_forms_short_names_only_in_own_namespace() {
        let services = vec![
            svc("shop", "orders", Some(Ipv4Addr::new(10, 96, 0, 10)), vec![]),
            svc("other", "web", Some(Ipv4Addr::new(10, 96, 0, 11)), vec![]),
            svc(
                "shop",
                "db",
                None,
                vec![Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 5)],
            ),
        ];
        let hosts = render_hosts(
            "s",
            Some("shop"),
            Some(("pod-a", Ipv4Addr::new(10, 244, 1, 2))),
            &services,
        );
        assert!(hosts.contains("10.96.0.10\torders.shop.svc.cluster.local\torders.shop\torders\n"));
        assert!(hosts.contains("10.96.0.11\tweb.other.svc.cluster.local\tweb.other\n"));
        assert!(hosts.contains("10.244.1.5\tdb.shop.svc.cluster.local\tdb.shop\tdb\n"));
        assert!(hosts.contains("10.244.2.5\tdb.shop.svc.cluster.local"));
        assert!(hosts.contains("10.244.1.2\tpod-a\n"));
        assert!(hosts.contains("127.0.0.1\tlocalhost"));
        assert!(
            render_resolv(Some("shop"))
                .contains("search shop.svc.cluster.local svc.cluster.local cluster.local")
        );
        assert!(!render_resolv(Some("shop")).contains("nameserver"));
        assert!(render_resolv(None).contains("nameserver 127.0.0.1\n"));
    }

    #[test]
    fn rewrite_keeps_the_inode() {
        use std::os::unix::fs::MetadataExt;
        let dir = test_support::TempDir::new("meshctl-dns");
        let path = dir.join("hosts");
        write_in_place(&path, "a long first version\n").unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, "short\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
    }
}
