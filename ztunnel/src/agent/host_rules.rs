//! The node's own rule that lets kubelet's health probes reach captured pods.
//!
//! Inside each captured pod the redirection lets connections from 169.254.7.127 (IPv6
//! `fd16:9254:7127:1337:ffff:ffff:ffff:ffff`) through to the application untouched
//! ([`super::iptables`]): kubelet probes in plaintext from the node, and STRICT peer
//! authentication would refuse them at the proxy. This module gives the node's probes that
//! source, as istio-cni does on the host: in the node's network namespace, table `nat`, chain
//! `ISTIO_POSTRT` hooked first into `POSTROUTING`, TCP connections from a local socket
//! (`-m owner --socket-exists`: kubelet is a host process, forwarded pod traffic has no local
//! socket) to a captured pod's address are SNATed to that source.
//!
//! Istio matches the pod addresses with an ipset (`istio-inpod-probes-v4`/`-v6`). Here each
//! captured address is one rule in our chain instead: the node agent image ships `ip` and
//! iptables and nothing else, and an ipset adds a program, a kernel module and a second
//! object to keep in step and clean up. A node holds a bounded number of pods (110 by
//! default), `nat` sees only a connection's first packet, and the whole chain is rewritten in
//! one `iptables-restore --noflush` transaction, so every change is atomic and idempotent.
//!
//! Only what this module wrote is ever touched: its chain, and its one jump from
//! `POSTROUTING`. Starting removes whatever an earlier run left (stale addresses) by
//! rewriting the chain from the current set; stopping leaves both, for the pods that stay
//! captured ([`HostRules::remove_all`] takes them away when the mesh is uninstalled).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::host_variant;
use super::iptables::{Family, PROBE_SNAT_V4, PROBE_SNAT_V6, RulesError, Variant, run_checked};
use super::metrics::AgentMetrics;

/// Our chain in the node's `nat` table, hooked into `POSTROUTING` (Istio's name).
pub const CHAIN_POSTROUTING: &str = "ISTIO_POSTRT";

/// The jump into our chain, as `iptables-save` prints it.
const JUMP: &str = "-A POSTROUTING -j ISTIO_POSTRT";

/// The captured pods' addresses whose probes are to be SNATed, by pod uid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeTargets {
    pods: BTreeMap<String, Vec<IpAddr>>,
}

impl ProbeTargets {
    /// Records `uid` with `addresses`; whether the set of addresses changed.
    pub fn add(&mut self, uid: &str, addresses: &[IpAddr]) -> bool {
        let before = self.addresses();
        self.pods.insert(uid.to_string(), addresses.to_vec());
        self.addresses() != before
    }

    /// Forgets `uid`; whether the set of addresses changed.
    pub fn remove(&mut self, uid: &str) -> bool {
        let before = self.addresses();
        self.pods.remove(uid);
        self.addresses() != before
    }

    /// Every address, deduplicated and sorted (two uids may briefly share one while a pod
    /// is replaced).
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.pods.values().flatten().copied().collect()
    }

    /// The addresses of `family`.
    fn of(&self, family: Family) -> Vec<IpAddr> {
        self.addresses()
            .into_iter()
            .filter(|a| a.is_ipv6() == (family == Family::V6))
            .collect()
    }
}

/// What of ours the node's `nat` table holds, read from `iptables-save -t nat`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInstalled {
    /// Whether our chain is declared.
    pub chain: bool,
    /// How many jumps into it `POSTROUTING` holds.
    pub jumps: usize,
    /// How many rules our chain holds.
    pub rules: usize,
}

impl HostInstalled {
    /// Reads `iptables-save -t nat` output (other tables' sections are skipped).
    pub fn parse(save: &str) -> HostInstalled {
        let mut found = HostInstalled::default();
        let mut in_nat = false;
        let rule_prefix = format!("-A {CHAIN_POSTROUTING} ");
        for line in save.lines().map(str::trim_end) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(decl) = line.strip_prefix(':') {
                found.chain |= decl.split_whitespace().next() == Some(CHAIN_POSTROUTING);
            } else if line == JUMP {
                found.jumps += 1;
            } else if line.starts_with(&rule_prefix) {
                found.rules += 1;
            }
        }
        found
    }

    /// Whether anything of ours is present.
    pub fn any(&self) -> bool {
        self.chain || self.jumps > 0
    }

    /// Whether the chain is hooked exactly once.
    pub fn hooked(&self) -> bool {
        self.chain && self.jumps == 1
    }
}

/// The SNAT rule for one captured address.
fn snat_rule(family: Family, address: IpAddr) -> String {
    let (prefix, source) = match family {
        Family::V4 => (32, PROBE_SNAT_V4),
        Family::V6 => (128, PROBE_SNAT_V6),
    };
    format!(
        "-A {CHAIN_POSTROUTING} -d {address}/{prefix} -p tcp -m owner --socket-exists \
         -j SNAT --to-source {source}"
    )
}

/// The `iptables-restore --noflush` input bringing a node holding `installed` to exactly the
/// rules for `targets`: the chain declared (which flushes it) and refilled, one jump first
/// in `POSTROUTING`.
pub fn render_install(family: Family, installed: &HostInstalled, targets: &ProbeTargets) -> String {
    let mut out = format!("*nat\n:{CHAIN_POSTROUTING} - [0:0]\n");
    match installed.jumps {
        // First, as Istio hooks it: ahead of any masquerading that would otherwise pick the
        // node's own address.
        0 => {
            let _ = writeln!(out, "-I POSTROUTING 1 -j {CHAIN_POSTROUTING}");
        }
        n => {
            for _ in 1..n {
                let _ = writeln!(out, "-D POSTROUTING -j {CHAIN_POSTROUTING}");
            }
        }
    }
    for address in targets.of(family) {
        let _ = writeln!(out, "{}", snat_rule(family, address));
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input removing everything of ours `installed` shows, or
/// `None` when there is nothing.
pub fn render_remove(installed: &HostInstalled) -> Option<String> {
    if !installed.any() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for _ in 0..installed.jumps {
        let _ = writeln!(out, "-D POSTROUTING -j {CHAIN_POSTROUTING}");
    }
    if installed.chain {
        let _ = writeln!(out, "-F {CHAIN_POSTROUTING}\n-X {CHAIN_POSTROUTING}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Which families the node needs rules for: IPv4 always; IPv6 when a target has an IPv6
/// address or an earlier run left IPv6 rules (`had_v6`).
fn families(targets: &ProbeTargets, had_v6: bool) -> Vec<Family> {
    let mut families = vec![Family::V4];
    if had_v6 || targets.addresses().iter().any(IpAddr::is_ipv6) {
        families.push(Family::V6);
    }
    families
}

/// What of ours the node's namespace holds for `family`, in `variant`'s tables.
pub async fn installed(
    netns: BorrowedFd<'_>,
    family: Family,
    variant: Variant,
) -> Result<HostInstalled, RulesError> {
    let save = run_checked(
        netns,
        family.save_program_of(variant),
        &["-t", "nat"],
        None,
        &[],
    )
    .await?;
    Ok(HostInstalled::parse(&save))
}

/// Keeps the node's probe rule in step with the captured pods, in the node's namespace.
#[derive(Debug)]
pub struct HostRules {
    netns: std::os::fd::OwnedFd,
    targets: ProbeTargets,
    /// Whether IPv6 rules were ever written (or found), so they are kept up and removed.
    v6: bool,
    /// Whether the chain was written whole once: until then changes only gather targets, and
    /// what an earlier agent left stays in force.
    started: bool,
    /// The iptables variant of the node's own rules, found at the first write.
    variant: Variant,
    /// Failures and the addresses covered.
    metrics: Arc<AgentMetrics>,
}

impl HostRules {
    /// Rules for the node whose network namespace is `netns`, with no target yet, counted in
    /// `metrics`.
    pub fn new(netns: std::os::fd::OwnedFd, metrics: Arc<AgentMetrics>) -> HostRules {
        HostRules {
            netns,
            targets: ProbeTargets::default(),
            v6: false,
            started: false,
            variant: Variant::System,
            metrics,
        }
    }

    /// How many writes and removals failed so far.
    pub fn failures(&self) -> u64 {
        self.metrics.probe_rule_failures.load(Ordering::Relaxed)
    }

    /// Counts one failure; the running total.
    fn failed(&self) -> u64 {
        self.metrics
            .probe_rule_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    /// The current targets.
    pub fn targets(&self) -> &ProbeTargets {
        &self.targets
    }

    /// The first write, once every pod of the node was looked at: what an earlier run left
    /// is replaced, IPv6 included when it left IPv6 rules (read where `ip6tables-save` works;
    /// a node without IPv6 has none). Later calls do nothing.
    pub async fn start(&mut self) {
        use std::os::fd::AsFd;
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        self.variant = host_variant::detect(self.netns.as_fd()).await;
        tracing::info!(variant = ?self.variant, "the node's own rules are in this iptables variant");
        if let Ok(found) = installed(self.netns.as_fd(), Family::V6, self.variant).await {
            self.v6 |= found.any();
        }
        self.sync().await;
    }

    /// Installs the chain and its jump from the current targets, replacing what an earlier
    /// run left. Failures are logged and counted; the next change tries again.
    pub async fn sync(&mut self) {
        use std::os::fd::AsFd;
        for family in families(&self.targets, self.v6) {
            let result = async {
                let current = installed(self.netns.as_fd(), family, self.variant).await?;
                let input = render_install(family, &current, &self.targets);
                self.restore(family, &input).await
            }
            .await;
            match result {
                Ok(_) => self.v6 |= family == Family::V6,
                Err(e) => {
                    let failures = self.failed();
                    tracing::warn!(
                        failures,
                        "installing the node's probe SNAT rule ({family:?}): {e}"
                    );
                }
            }
        }
        let covered = self.targets.addresses().len() as u64;
        self.metrics
            .probe_rule_addresses
            .store(covered, Ordering::Relaxed);
    }

    /// Loads `input` into the node's `family` tables, in the node's variant, leaving the rest.
    async fn restore(&self, family: Family, input: &str) -> Result<String, RulesError> {
        use std::os::fd::AsFd;
        run_checked(
            self.netns.as_fd(),
            family.restore_program_of(self.variant),
            &["--noflush"],
            Some(input),
            &[],
        )
        .await
    }

    /// Adds a captured pod's addresses; rewrites the chain when they are new (once started).
    pub async fn add(&mut self, uid: &str, addresses: &[IpAddr]) {
        if self.targets.add(uid, addresses) && self.started {
            self.sync().await;
        }
    }

    /// Removes a released pod's addresses; rewrites the chain when one goes (once started).
    pub async fn remove(&mut self, uid: &str) {
        if self.targets.remove(uid) && self.started {
            self.sync().await;
        }
    }

    /// Removes the jump and the chain: for an uninstall, once no pod is captured (a stop
    /// leaves them, as it leaves the pods' own rules).
    pub async fn remove_all(&mut self) {
        use std::os::fd::AsFd;
        if !self.started {
            // An earlier agent's chain, in the node's variant.
            self.variant = host_variant::detect(self.netns.as_fd()).await;
        }
        for family in families(&self.targets, self.v6) {
            let result = async {
                let current = installed(self.netns.as_fd(), family, self.variant).await?;
                match render_remove(&current) {
                    Some(input) => self.restore(family, &input).await.map(drop),
                    None => Ok(()),
                }
            }
            .await;
            if let Err(e) = result {
                let failures = self.failed();
                tracing::warn!(
                    failures,
                    "removing the node's probe SNAT rule ({family:?}): {e}"
                );
            }
        }
        self.metrics
            .probe_rule_addresses
            .store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fresh_install_hooks_first_and_snats_each_captured_address() {
        let mut t = ProbeTargets::default();
        t.add("a", &[ip("10.244.1.3")]);
        t.add("b", &[ip("10.244.1.2"), ip("fd00::2")]);
        assert_eq!(
            render_install(Family::V4, &HostInstalled::default(), &t),
            "\
*nat
:ISTIO_POSTRT - [0:0]
-I POSTROUTING 1 -j ISTIO_POSTRT
-A ISTIO_POSTRT -d 10.244.1.2/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127
-A ISTIO_POSTRT -d 10.244.1.3/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127
COMMIT
"
        );
        let v6 = render_install(Family::V6, &HostInstalled::default(), &t);
        assert!(v6.contains(
            "-A ISTIO_POSTRT -d fd00::2/128 -p tcp -m owner --socket-exists -j SNAT \
             --to-source fd16:9254:7127:1337:ffff:ffff:ffff:ffff\n"
        ));
        assert!(!v6.contains("10.244"));
    }

    /// `iptables-save -t nat` of a node holding our rules twice hooked, beside others'.
    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_POSTRT - [0:0]
:MS-POSTROUTING - [0:0]
-A POSTROUTING -j ISTIO_POSTRT
-A POSTROUTING -j MS-POSTROUTING
-A POSTROUTING -j ISTIO_POSTRT
-A ISTIO_POSTRT -d 10.244.1.9/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127
-A MS-POSTROUTING -s 10.244.1.2/32 -d 10.244.1.2/32 -j MASQUERADE
COMMIT
";

    #[test]
    fn restart_rewrites_the_chain_from_the_current_set_and_keeps_one_jump() {
        let found = HostInstalled::parse(SAVED);
        assert_eq!(
            found,
            HostInstalled {
                chain: true,
                jumps: 2,
                rules: 1
            }
        );
        assert!(!found.hooked());
        // A new run knows one pod; the stale 10.244.1.9 goes with the flush.
        let mut t = ProbeTargets::default();
        t.add("a", &[ip("10.244.1.4")]);
        let text = render_install(Family::V4, &found, &t);
        assert_eq!(
            text,
            "\
*nat
:ISTIO_POSTRT - [0:0]
-D POSTROUTING -j ISTIO_POSTRT
-A ISTIO_POSTRT -d 10.244.1.4/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127
COMMIT
"
        );
        assert!(!text.contains("MS-POSTROUTING"), "others' rules untouched");
    }

    #[test]
    fn removal_deletes_exactly_our_jumps_and_chain() {
        assert_eq!(
            render_remove(&HostInstalled::parse(SAVED)).unwrap(),
            "\
*nat
-D POSTROUTING -j ISTIO_POSTRT
-D POSTROUTING -j ISTIO_POSTRT
-F ISTIO_POSTRT
-X ISTIO_POSTRT
COMMIT
"
        );
        assert_eq!(render_remove(&HostInstalled::default()), None);
        // Only the nat table counts: a filter chain of the same name is not ours to remove.
        let filter_only = "*filter\n:ISTIO_POSTRT - [0:0]\nCOMMIT\n";
        assert_eq!(render_remove(&HostInstalled::parse(filter_only)), None);
    }

    #[test]
    fn targets_count_changes_of_the_address_set_only() {
        let mut t = ProbeTargets::default();
        assert!(t.add("a", &[ip("10.244.1.2")]));
        assert!(!t.add("a", &[ip("10.244.1.2")]), "same again: no rewrite");
        // A replacement pod briefly shares the address under a new uid.
        assert!(!t.add("a2", &[ip("10.244.1.2")]));
        assert!(!t.remove("a"), "still held by a2");
        assert!(t.remove("a2"));
        assert!(!t.remove("a2"), "already gone");
        assert!(t.addresses().is_empty());
        assert!(t.add("b", &[ip("10.244.1.5"), ip("fd00::5")]));
        assert_eq!(families(&t, false), [Family::V4, Family::V6]);
        t.remove("b");
        assert_eq!(families(&t, false), [Family::V4]);
        assert_eq!(families(&t, true), [Family::V4, Family::V6]);
    }
}
