//! The in-pod redirection rules: the same contract istio-cni installs in a pod's network
//! namespace in ambient mode, so an Istio ztunnel and ours are interchangeable.
//!
//! - `mangle`: packets of the proxy's own sockets (mark `0x539/0xfff`) entering the pod set
//!   connmark `0x111/0xfff`; replies restore it as the packet mark, and policy routing
//!   (`fwmark 0x111/0xfff` → table 100 → `local` via `lo`) delivers them back to the proxy,
//!   which is what lets it connect to the application with the original client's address.
//! - `nat`: inbound TCP not for loopback and not for 15008 (HBONE, which the proxy listens on
//!   directly) → `REDIRECT` to 15006; outbound TCP not for loopback and not from the proxy →
//!   `REDIRECT` to 15001. Health probes from the node, SNATed there to 169.254.7.127
//!   (`fd16:9254:7127:1337:ffff:ffff:ffff:ffff`), pass untouched both ways, as do
//!   connections to the pod's own addresses over `lo`.
//!
//! Both redirects are `REDIRECT`, so the proxy learns the original destination with
//! `SO_ORIGINAL_DST` on 15001 and 15006 alike. No sysctl is changed.
//!
//! Everything lives in chains we own (`ISTIO_PRERT`, `ISTIO_OUTPUT`) reached by one jump from
//! each built-in chain, applied with `iptables-restore --noflush` so each table changes
//! atomically and other rules in the pod are never touched. Installing declares (and so
//! flushes) our chains, refills them and adds the jumps that are missing: running it twice
//! gives the same result. Removing deletes exactly the jumps, chains, `ip rule` and route
//! that installing added.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;

use super::netns::{NetnsError, run_in_netns};

// The proxy's own ports and socket mark: the rules and the listeners must agree on them.
pub use crate::proxy::socket::PROXY_MARK as INPOD_MARK;
pub use crate::proxy::{INBOUND_HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};

/// Mask of [`INPOD_MARK`].
pub const INPOD_MASK: u32 = 0xfff;
/// Connection mark of connections the proxy made inside the pod, restored on their replies.
pub const INPOD_TPROXY_MARK: u32 = 0x111;
/// Mask of [`INPOD_TPROXY_MARK`].
pub const INPOD_TPROXY_MASK: u32 = 0xfff;
/// Masks used when restoring the connection mark.
pub const INPOD_RESTORE_MASK: u32 = 0xffff_ffff;
/// Routing table delivering marked replies locally.
pub const ROUTE_TABLE: u32 = 100;
/// Priority of the `ip rule` selecting [`ROUTE_TABLE`].
pub const RULE_PRIORITY: u32 = 32764;
/// Source address the node gives its health probes (IPv4).
pub const PROBE_SNAT_V4: &str = "169.254.7.127";
/// Source address the node gives its health probes (IPv6).
pub const PROBE_SNAT_V6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";
/// Our chain hooked into `PREROUTING`.
pub const CHAIN_PREROUTING: &str = "ISTIO_PRERT";
/// Our chain hooked into `OUTPUT`.
pub const CHAIN_OUTPUT: &str = "ISTIO_OUTPUT";

/// The tables we use, in the order they are written.
const TABLES: [&str; 2] = ["mangle", "nat"];

/// Why rules could not be applied or removed.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The command could not run in the pod's namespace.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The command ran and failed.
    #[error("{command} failed (exit {code:?}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it printed on standard error.
        stderr: String,
    },
}

/// An IP family; each has its own tables, rules and routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`iptables`).
    V4,
    /// IPv6 (`ip6tables`).
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn probe_source(self) -> &'static str {
        match self {
            Family::V4 => PROBE_SNAT_V4,
            Family::V6 => PROBE_SNAT_V6,
        }
    }

    fn any(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }

    fn ip_flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    /// The program that prints the family's rules.
    pub(super) fn save_program(self) -> &'static str {
        self.save_program_of(Variant::System)
    }

    /// The program that loads the family's rules.
    pub(super) fn restore_program(self) -> &'static str {
        self.restore_program_of(Variant::System)
    }

    /// The program of `variant` that prints the family's rules.
    pub(super) fn save_program_of(self, variant: Variant) -> &'static str {
        match (self, variant) {
            (Family::V4, Variant::System) => "iptables-save",
            (Family::V4, Variant::Nft) => "iptables-nft-save",
            (Family::V4, Variant::Legacy) => "iptables-legacy-save",
            (Family::V6, Variant::System) => "ip6tables-save",
            (Family::V6, Variant::Nft) => "ip6tables-nft-save",
            (Family::V6, Variant::Legacy) => "ip6tables-legacy-save",
        }
    }

    /// The program of `variant` that loads the family's rules.
    pub(super) fn restore_program_of(self, variant: Variant) -> &'static str {
        match (self, variant) {
            (Family::V4, Variant::System) => "iptables-restore",
            (Family::V4, Variant::Nft) => "iptables-nft-restore",
            (Family::V4, Variant::Legacy) => "iptables-legacy-restore",
            (Family::V6, Variant::System) => "ip6tables-restore",
            (Family::V6, Variant::Nft) => "ip6tables-nft-restore",
            (Family::V6, Variant::Legacy) => "ip6tables-legacy-restore",
        }
    }
}

/// Which of the two iptables implementations a program drives. Rules written through one are
/// invisible to the other's save, and a node's own rules (kube-proxy's, the CNI's) live in one
/// of them: rules added to a node must go where its other rules are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// Whatever `iptables` names (in the image: nf_tables). Inside pods, whose rules are all
    /// the mesh's, that is always right.
    #[default]
    System,
    /// The nf_tables variant (`iptables-nft`).
    Nft,
    /// The x_tables variant (`iptables-legacy`).
    Legacy,
}

/// The families a pod with `addresses` needs rules for: IPv4 always (harmless without an
/// IPv4 address), IPv6 when the pod has an IPv6 address.
pub fn families_for(addresses: &[IpAddr]) -> Vec<Family> {
    let mut families = vec![Family::V4];
    if addresses.iter().any(IpAddr::is_ipv6) {
        families.push(Family::V6);
    }
    families
}

fn mark(value: u32, mask: u32) -> String {
    format!("{value:#x}/{mask:#x}")
}

/// Jumps from built-in chains into ours, per table, in Istio's order.
fn jumps(table: &str) -> &'static [(&'static str, &'static str)] {
    match table {
        "mangle" => &[("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT)],
        "nat" => &[("OUTPUT", CHAIN_OUTPUT), ("PREROUTING", CHAIN_PREROUTING)],
        _ => &[],
    }
}

fn jump_rule(builtin: &str, chain: &str) -> String {
    format!("-A {builtin} -j {chain}")
}

/// The rules inside our chains for `table`, in Istio's order.
fn chain_rules(family: Family, table: &str) -> Vec<String> {
    let inpod = mark(INPOD_MARK, INPOD_MASK);
    let tproxy = mark(INPOD_TPROXY_MARK, INPOD_TPROXY_MASK);
    let lo = family.loopback();
    let probe = family.probe_source();
    match table {
        "mangle" => vec![
            format!(
                "-A {CHAIN_PREROUTING} -m mark --mark {inpod} -j CONNMARK --set-xmark {tproxy}"
            ),
            format!(
                "-A {CHAIN_OUTPUT} -m connmark --mark {tproxy} -j CONNMARK --restore-mark \
                 --nfmask {r:#x} --ctmask {r:#x}",
                r = INPOD_RESTORE_MASK
            ),
        ],
        "nat" => vec![
            format!("-A {CHAIN_PREROUTING} -s {probe} -p tcp -m tcp -j ACCEPT"),
            format!("-A {CHAIN_OUTPUT} -d {probe} -p tcp -m tcp -j ACCEPT"),
            format!(
                "-A {CHAIN_PREROUTING} ! -d {lo} -p tcp ! --dport {INBOUND_HBONE_PORT} -m mark ! \
                 --mark {inpod} -j REDIRECT --to-ports {INBOUND_PLAINTEXT_PORT}"
            ),
            format!("-A {CHAIN_OUTPUT} -p tcp -m mark --mark {tproxy} -j ACCEPT"),
            format!("-A {CHAIN_OUTPUT} ! -d {lo} -o lo -j ACCEPT"),
            format!(
                "-A {CHAIN_OUTPUT} ! -d {lo} -p tcp -m mark ! --mark {inpod} -j REDIRECT \
                 --to-ports {OUTBOUND_PORT}"
            ),
        ],
        _ => Vec::new(),
    }
}

/// What of ours a namespace holds, read from `iptables-save`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Table → our chains declared in it.
    chains: BTreeMap<String, BTreeSet<String>>,
    /// Table → our jump rule → how many times it is present.
    jumps: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Installed {
    /// Reads `iptables-save` output.
    pub fn parse(save: &str) -> Installed {
        let mut installed = Installed::default();
        let mut table = String::new();
        for line in save.lines() {
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix('*') {
                table = name.to_string();
            } else if let Some(decl) = line.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or_default();
                if chain == CHAIN_PREROUTING || chain == CHAIN_OUTPUT {
                    installed
                        .chains
                        .entry(table.clone())
                        .or_default()
                        .insert(chain.to_string());
                }
            } else if jumps(&table).iter().any(|(b, c)| jump_rule(b, c) == line) {
                *installed
                    .jumps
                    .entry(table.clone())
                    .or_default()
                    .entry(line.to_string())
                    .or_default() += 1;
            }
        }
        installed
    }

    /// Whether any of our chains or jumps is present.
    pub fn any(&self) -> bool {
        self.chains.values().any(|c| !c.is_empty()) || self.jumps.values().any(|j| !j.is_empty())
    }

    /// Whether both our chains and every jump into them are present, each jump exactly once
    /// (the chains' contents are not compared).
    pub fn hooked(&self) -> bool {
        TABLES.iter().all(|table| {
            [CHAIN_PREROUTING, CHAIN_OUTPUT]
                .iter()
                .all(|c| self.has_chain(table, c))
                && jumps(table)
                    .iter()
                    .all(|(b, c)| self.jump_count(table, &jump_rule(b, c)) == 1)
        })
    }

    fn jump_count(&self, table: &str, rule: &str) -> usize {
        self.jumps
            .get(table)
            .and_then(|j| j.get(rule))
            .copied()
            .unwrap_or(0)
    }

    fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.chains.get(table).is_some_and(|c| c.contains(chain))
    }
}

/// The `iptables-restore --noflush` input that brings a namespace holding `installed` to the
/// full rule set: our chains declared (which flushes them) and refilled, each jump present
/// exactly once.
pub fn render_install(family: Family, installed: &Installed) -> String {
    let mut out = String::new();
    for table in TABLES {
        let _ = writeln!(out, "*{table}");
        for chain in [CHAIN_PREROUTING, CHAIN_OUTPUT] {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for (builtin, chain) in jumps(table) {
            let rule = jump_rule(builtin, chain);
            match installed.jump_count(table, &rule) {
                0 => {
                    let _ = writeln!(out, "{rule}");
                }
                n => {
                    // Duplicates (from a tool that appended blindly) go; one stays.
                    for _ in 1..n {
                        let _ = writeln!(out, "-D {builtin} -j {chain}");
                    }
                }
            }
        }
        for rule in chain_rules(family, table) {
            let _ = writeln!(out, "{rule}");
        }
        let _ = writeln!(out, "COMMIT");
    }
    out
}

/// The `iptables-restore --noflush` input removing everything of ours `installed` shows, or
/// `None` when there is nothing to remove.
pub fn render_remove(installed: &Installed) -> Option<String> {
    if !installed.any() {
        return None;
    }
    let mut out = String::new();
    for table in TABLES {
        let mut lines = Vec::new();
        for (builtin, chain) in jumps(table) {
            for _ in 0..installed.jump_count(table, &jump_rule(builtin, chain)) {
                lines.push(format!("-D {builtin} -j {chain}"));
            }
        }
        let ours: Vec<&str> = [CHAIN_PREROUTING, CHAIN_OUTPUT]
            .into_iter()
            .filter(|c| installed.has_chain(table, c))
            .collect();
        // Flush all before deleting any: one chain may still be referenced by nothing but
        // must be empty to go.
        lines.extend(ours.iter().map(|c| format!("-F {c}")));
        lines.extend(ours.iter().map(|c| format!("-X {c}")));
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "COMMIT");
    }
    Some(out)
}

/// One `ip` invocation and the error text that means "already in the wanted state".
#[derive(Debug, PartialEq, Eq)]
pub struct IpCommand {
    /// Arguments after `ip`.
    pub args: Vec<String>,
    /// Failures containing this are success (the object already exists / is already gone).
    pub tolerate: &'static [&'static str],
}

/// The `ip` commands installing (`add`) or removing the policy routing for `family`, in
/// Istio's order: route then rule on install, rule then route on removal.
pub fn ip_commands(family: Family, add: bool) -> Vec<IpCommand> {
    let table = ROUTE_TABLE.to_string();
    let route = |verb: &str| {
        [
            family.ip_flag(),
            "route",
            verb,
            "local",
            family.any(),
            "dev",
            "lo",
            "table",
            &table,
        ]
        .map(String::from)
        .to_vec()
    };
    let fwmark = mark(INPOD_TPROXY_MARK, INPOD_TPROXY_MASK);
    let prio = RULE_PRIORITY.to_string();
    let rule = |verb: &str| {
        [
            family.ip_flag(),
            "rule",
            verb,
            "fwmark",
            &fwmark,
            "pref",
            &prio,
            "lookup",
            &table,
        ]
        .map(String::from)
        .to_vec()
    };
    // How `ip` says a rule or route is already absent (the last when table 100 is empty).
    const GONE: &[&str] = &[
        "No such file or directory",
        "No such process",
        "FIB table does not exist",
    ];
    if add {
        vec![
            // `replace` is idempotent by itself.
            IpCommand {
                args: route("replace"),
                tolerate: &[],
            },
            IpCommand {
                args: rule("add"),
                tolerate: &["File exists"],
            },
        ]
    } else {
        vec![
            IpCommand {
                args: rule("del"),
                tolerate: GONE,
            },
            IpCommand {
                args: route("del"),
                tolerate: GONE,
            },
        ]
    }
}

pub(super) async fn run_checked(
    netns: BorrowedFd<'_>,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    tolerate: &[&str],
) -> Result<String, RulesError> {
    let out = run_in_netns(netns, program, args, stdin).await?;
    if out.success || tolerate.iter().any(|t| out.stderr.contains(t)) {
        return Ok(out.stdout);
    }
    Err(RulesError::Failed {
        command: format!("{program} {}", args.join(" ")),
        code: out.code,
        stderr: out.stderr.trim().to_string(),
    })
}

/// What of ours the namespace currently holds for `family`.
pub async fn installed(netns: BorrowedFd<'_>, family: Family) -> Result<Installed, RulesError> {
    let mut all = Installed::default();
    for table in TABLES {
        let save = run_checked(netns, family.save_program(), &["-t", table], None, &[]).await?;
        let part = Installed::parse(&save);
        all.chains.extend(part.chains);
        all.jumps.extend(part.jumps);
    }
    Ok(all)
}

/// Installs the redirection (routes, rule, then iptables) in the namespace for `families`.
/// Idempotent.
pub async fn install(netns: BorrowedFd<'_>, families: &[Family]) -> Result<(), RulesError> {
    for &family in families {
        for cmd in ip_commands(family, true) {
            let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
            run_checked(netns, "ip", &args, None, cmd.tolerate).await?;
        }
        let current = installed(netns, family).await?;
        let input = render_install(family, &current);
        run_checked(
            netns,
            family.restore_program(),
            &["--noflush"],
            Some(&input),
            &[],
        )
        .await?;
    }
    Ok(())
}

/// Removes the redirection (iptables, rule, then route) from the namespace for `families`.
/// Idempotent: what is already gone is skipped.
pub async fn remove(netns: BorrowedFd<'_>, families: &[Family]) -> Result<(), RulesError> {
    for &family in families {
        let current = installed(netns, family).await?;
        if let Some(input) = render_remove(&current) {
            run_checked(
                netns,
                family.restore_program(),
                &["--noflush"],
                Some(&input),
                &[],
            )
            .await?;
        }
        for cmd in ip_commands(family, false) {
            let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
            run_checked(netns, "ip", &args, None, cmd.tolerate).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRESH_V4: &str = "\
*mangle
:ISTIO_PRERT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff
-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
COMMIT
*nat
:ISTIO_PRERT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A OUTPUT -j ISTIO_OUTPUT
-A PREROUTING -j ISTIO_PRERT
-A ISTIO_PRERT -s 169.254.7.127 -p tcp -m tcp -j ACCEPT
-A ISTIO_OUTPUT -d 169.254.7.127 -p tcp -m tcp -j ACCEPT
-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001
COMMIT
";

    #[test]
    fn fresh_install_renders_istios_in_pod_rules() {
        assert_eq!(render_install(Family::V4, &Installed::default()), FRESH_V4);
    }

    #[test]
    fn ipv6_uses_ipv6_loopback_and_probe_source() {
        let v6 = render_install(Family::V6, &Installed::default());
        assert!(v6.contains(
            "-A ISTIO_PRERT -s fd16:9254:7127:1337:ffff:ffff:ffff:ffff -p tcp -m tcp -j ACCEPT\n"
        ));
        assert!(v6.contains(
            "-A ISTIO_OUTPUT ! -d ::1/128 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001\n"
        ));
        assert!(!v6.contains("127.0.0.1"));
    }

    /// `iptables-save` of a namespace holding our rules (as iptables prints them back).
    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_PRERT - [0:0]
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_PRERT - [0:0]
:OTHER - [0:0]
-A PREROUTING -j OTHER
-A PREROUTING -j ISTIO_PRERT
-A OUTPUT -j ISTIO_OUTPUT
COMMIT
";

    #[test]
    fn reinstall_keeps_one_jump_each_and_touches_nothing_else() {
        let installed = Installed::parse(SAVED);
        assert!(installed.any());
        assert!(!installed.hooked(), "a jump is missing and one is doubled");
        let text = render_install(Family::V4, &installed);
        // Existing jumps are not added again; the duplicate is removed.
        assert!(!text.contains("-A PREROUTING -j ISTIO_PRERT"));
        assert!(!text.contains("-A OUTPUT -j ISTIO_OUTPUT"));
        assert_eq!(text.matches("-D OUTPUT -j ISTIO_OUTPUT").count(), 1);
        assert!(!text.contains("OTHER"));
        // The chains are still declared (flushed) and refilled.
        assert_eq!(text.matches(":ISTIO_PRERT - [0:0]").count(), 2);
        assert_eq!(text.matches("REDIRECT").count(), 2);
    }

    #[test]
    fn removal_deletes_exactly_our_jumps_and_chains() {
        let text = render_remove(&Installed::parse(SAVED)).unwrap();
        assert_eq!(
            text,
            "\
*mangle
-D PREROUTING -j ISTIO_PRERT
-D OUTPUT -j ISTIO_OUTPUT
-D OUTPUT -j ISTIO_OUTPUT
-F ISTIO_PRERT
-F ISTIO_OUTPUT
-X ISTIO_PRERT
-X ISTIO_OUTPUT
COMMIT
*nat
-D OUTPUT -j ISTIO_OUTPUT
-D PREROUTING -j ISTIO_PRERT
-F ISTIO_PRERT
-F ISTIO_OUTPUT
-X ISTIO_PRERT
-X ISTIO_OUTPUT
COMMIT
"
        );
        assert_eq!(render_remove(&Installed::default()), None);
    }

    #[test]
    fn policy_routing_commands_match_istio() {
        let join = |cmds: Vec<IpCommand>| -> Vec<String> {
            cmds.into_iter().map(|c| c.args.join(" ")).collect()
        };
        assert_eq!(
            join(ip_commands(Family::V4, true)),
            [
                "-4 route replace local 0.0.0.0/0 dev lo table 100",
                "-4 rule add fwmark 0x111/0xfff pref 32764 lookup 100",
            ]
        );
        assert_eq!(
            join(ip_commands(Family::V6, false)),
            [
                "-6 rule del fwmark 0x111/0xfff pref 32764 lookup 100",
                "-6 route del local ::/0 dev lo table 100",
            ]
        );
    }

    #[test]
    fn families_follow_the_pod_addresses() {
        let v4: IpAddr = "10.244.0.5".parse().unwrap();
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(families_for(&[v4]), [Family::V4]);
        assert_eq!(families_for(&[v4, v6]), [Family::V4, Family::V6]);
        assert_eq!(families_for(&[]), [Family::V4]);
    }
}
