//! Which iptables variant holds a node's own rules, so that the node agent's rule goes beside
//! them. The decision is the one kube-proxy's images make (kubernetes-sigs/iptables-wrappers):
//! the variant where kubelet or kube-proxy left their hint chains (`KUBE-IPTABLES-HINT`,
//! `KUBE-KUBELET-CANARY`); else the one holding more rules; nf_tables when nothing tells.

use std::os::fd::BorrowedFd;

use super::iptables::{Family, Variant, run_checked};

/// Chains that kubelet and kube-proxy create in the variant the node uses.
const HINT_CHAINS: &[&str] = &[":KUBE-IPTABLES-HINT", ":KUBE-KUBELET-CANARY"];

/// What one variant's save printed for a node (both families), `None` when its programs do
/// not run there.
#[derive(Debug, Default)]
struct Saved {
    hinted: bool,
    rules: usize,
}

impl Saved {
    fn of(text: &str) -> Saved {
        Saved {
            hinted: text
                .lines()
                .any(|l| HINT_CHAINS.iter().any(|h| l.starts_with(h))),
            rules: text.lines().filter(|l| l.starts_with("-A ")).count(),
        }
    }
}

/// The variant for `nft` and `legacy`, what each variant's save showed (`None`: unavailable).
fn decide(nft: Option<Saved>, legacy: Option<Saved>) -> Variant {
    match (nft, legacy) {
        (Some(n), _) if n.hinted => Variant::Nft,
        (_, Some(l)) if l.hinted => Variant::Legacy,
        (Some(n), Some(l)) if l.rules > n.rules => Variant::Legacy,
        (Some(_), _) => Variant::Nft,
        (None, Some(_)) => Variant::Legacy,
        (None, None) => Variant::System,
    }
}

/// What `variant`'s save prints for both families in `netns` (a family whose save fails, a
/// node without IPv6, counts nothing); `None` when the IPv4 save does not run at all.
async fn saved(netns: BorrowedFd<'_>, variant: Variant) -> Option<Saved> {
    let v4 = run_checked(netns, Family::V4.save_program_of(variant), &[], None, &[])
        .await
        .ok()?;
    let v6 = run_checked(netns, Family::V6.save_program_of(variant), &[], None, &[])
        .await
        .unwrap_or_default();
    Some(Saved::of(&format!("{v4}{v6}")))
}

/// The variant holding the rules of the node whose namespace is `netns`.
pub async fn detect(netns: BorrowedFd<'_>) -> Variant {
    let nft = saved(netns, Variant::Nft).await;
    let legacy = saved(netns, Variant::Legacy).await;
    decide(nft, legacy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(text: &str) -> Option<Saved> {
        Some(Saved::of(text))
    }

    #[test]
    fn hint_chains_decide_then_the_count_of_rules_then_nf_tables() {
        let hinted = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
        let busy =
            "*nat\n-A POSTROUTING -j KUBE-POSTROUTING\n-A KUBE-POSTROUTING -j RETURN\nCOMMIT\n";
        let quiet = "*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n";
        assert_eq!(decide(saved(hinted), saved(busy)), Variant::Nft);
        assert_eq!(decide(saved(busy), saved(hinted)), Variant::Legacy);
        let canary = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
        assert_eq!(decide(saved(quiet), saved(canary)), Variant::Legacy);
        assert_eq!(decide(saved(quiet), saved(busy)), Variant::Legacy);
        assert_eq!(decide(saved(busy), saved(quiet)), Variant::Nft);
        assert_eq!(decide(saved(quiet), saved(quiet)), Variant::Nft);
        assert_eq!(decide(saved(quiet), None), Variant::Nft);
        assert_eq!(decide(None, saved(quiet)), Variant::Legacy);
        assert_eq!(decide(None, None), Variant::System);
    }
}
