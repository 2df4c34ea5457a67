//! Choosing a route's destination by weight, and the endpoint policy of a destination
//! (service or subset).

use std::collections::HashSet;
use std::sync::OnceLock;

use super::config::{DestPolicy, DestSpec, EndpointPolicy, WeightedDest};

/// Picks a destination at random in proportion to the weights (`total` is their sum, > 0).
pub(crate) fn weighted(dests: &[WeightedDest], total: u64) -> &WeightedDest {
    let mut point = fastrand::u64(0..total.max(1));
    for d in dests {
        let w = u64::from(d.weight);
        if point < w {
            return d;
        }
        point -= w;
    }
    // Unreachable with a consistent total; the last destination is a safe answer.
    &dests[dests.len() - 1]
}

/// How a destination's endpoints are chosen and protected.
pub(crate) struct Resolved<'a> {
    /// Balancer, pool and outlier settings.
    pub policy: &'a EndpointPolicy,
    /// Workloads of the subset; `None`: every endpoint.
    pub uids: Option<&'a HashSet<String>>,
    /// Pool key: the subset name, "" for the service.
    pub pool_key: &'a str,
}

fn default_policy() -> &'static EndpointPolicy {
    static DEFAULT: OnceLock<EndpointPolicy> = OnceLock::new();
    DEFAULT.get_or_init(EndpointPolicy::default)
}

/// The endpoint policy of `dest` under its service's `policy` (absent: defaults); `None` when
/// the destination names a subset the policy does not define.
pub(crate) fn resolve<'a>(
    dest: &'a DestSpec,
    policy: Option<&'a DestPolicy>,
) -> Option<Resolved<'a>> {
    match (&dest.subset, policy) {
        (None, Some(p)) => Some(Resolved {
            policy: &p.policy,
            uids: None,
            pool_key: "",
        }),
        (None, None) => Some(Resolved {
            policy: default_policy(),
            uids: None,
            pool_key: "",
        }),
        (Some(name), Some(p)) => p.subsets.get(name).map(|s| Resolved {
            policy: &s.policy,
            uids: Some(&s.uids),
            pool_key: name.as_str(),
        }),
        (Some(_), None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::headers::HeaderMods;

    fn dest(name: &str, weight: u32) -> WeightedDest {
        WeightedDest {
            dest: DestSpec::new(name, "ns", 0, None),
            weight,
            request_headers: HeaderMods::default(),
            response_headers: HeaderMods::default(),
        }
    }

    #[test]
    fn weights_hold_over_many_choices() {
        let ds = vec![dest("v1", 90), dest("v2", 10)];
        let n = 20_000;
        let v2 = (0..n)
            .filter(|_| weighted(&ds, 100).dest.hostname == "v2")
            .count();
        // 10 % of 20 000 has a standard deviation of ~42: six of them either side.
        assert!((1750..=2250).contains(&v2), "{v2}");
        let single = vec![dest("only", 1)];
        assert_eq!(weighted(&single, 1).dest.hostname, "only");
    }

    #[test]
    fn unknown_subsets_do_not_resolve() {
        let mut d = dest("svc", 1).dest;
        assert!(resolve(&d, None).is_some());
        d.subset = Some("v9".into());
        assert!(resolve(&d, None).is_none());
        assert!(resolve(&d, Some(&DestPolicy::default())).is_none());
    }
}
