//! `ztunnel preflight`: whether this host can capture pods, tried for real in a throwaway
//! network namespace: the policy routing and the iptables rules the node agent installs in
//! every pod, for each IP family. Nothing outside the throwaway namespace changes, and it is
//! gone when the check ends.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::iptables::{self, Family};
use super::netns::run_in_netns;

/// What installing the redirection in a fresh namespace gave, per family.
#[derive(Debug)]
pub struct Preflight {
    /// Each family tried and why it failed, if it did.
    pub families: Vec<(Family, Result<(), String>)>,
}

impl Preflight {
    /// Whether every family installs.
    pub fn passed(&self) -> bool {
        self.families.iter().all(|(_, result)| result.is_ok())
    }
}

/// Installs the in-pod redirection for IPv4 and IPv6 in a throwaway namespace. An error is
/// returned only when no namespace could be made (not root, no network namespaces).
pub async fn run() -> io::Result<Preflight> {
    let netns = throwaway_netns()?;
    let lo = run_in_netns(netns.as_fd(), "ip", &["link", "set", "lo", "up"], None)
        .await
        .map_err(io::Error::other)?;
    if !lo.success {
        return Err(io::Error::other(format!(
            "ip link set lo up: {}",
            lo.stderr.trim()
        )));
    }
    let mut families = Vec::new();
    for family in [Family::V4, Family::V6] {
        let result = iptables::install(netns.as_fd(), &[family])
            .await
            .map_err(|e| e.to_string());
        families.push((family, result));
    }
    Ok(Preflight { families })
}

/// A new, empty network namespace, held by the returned descriptor only.
fn throwaway_netns() -> io::Result<OwnedFd> {
    // A thread of its own enters it, so the calling threads keep the host's namespace; the
    // descriptor keeps it alive once that thread is gone.
    std::thread::spawn(|| -> io::Result<OwnedFd> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_redirection_installs_in_a_throwaway_namespace_and_leaves_the_host_alone() {
        let preflight = run().await.expect("root can make a network namespace");
        assert!(preflight.passed(), "{preflight:?}");
        assert_eq!(preflight.families.len(), 2);
        let host = std::process::Command::new("iptables-save")
            .output()
            .unwrap();
        let host = String::from_utf8_lossy(&host.stdout);
        for chain in [iptables::CHAIN_PREROUTING, iptables::CHAIN_OUTPUT] {
            assert!(
                !host.contains(chain),
                "{chain} stays out of the host's rules"
            );
        }
    }
}
