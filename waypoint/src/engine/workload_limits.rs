//! Rate limits per workload (Linkerd's HTTPLocalRateLimitPolicy of a Server): checked once the
//! endpoint is chosen, each workload with buckets of its own, as each Linkerd proxy limits its
//! own pod. A request takes a token from its client's bucket (the override naming its
//! identity, else the per-identity limit), then from the workload's total.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use api::waypoint as pb;

use super::compile::ConfigError;
use super::ratelimit::{Bucket, RateLimitSpec};

/// Most per-identity buckets kept; clients beyond share one bucket per workload and limit.
const MAX_IDENTITY_BUCKETS: usize = 10_000;

/// One override: its clients share one bucket.
#[derive(Debug)]
struct Override {
    principals: HashSet<String>,
    spec: RateLimitSpec,
}

/// One compiled limit.
#[derive(Debug)]
struct Limit {
    name: String,
    uids: HashSet<String>,
    ports: Vec<u16>,
    total: Option<RateLimitSpec>,
    per_identity: Option<RateLimitSpec>,
    overrides: Vec<Override>,
}

/// Every workload limit of a config.
#[derive(Debug, Default)]
pub(crate) struct WorkloadLimits {
    limits: Vec<Limit>,
}

fn spec(r: Option<&pb::LocalRateLimit>, field: &str) -> Result<Option<RateLimitSpec>, ConfigError> {
    r.map(|r| RateLimitSpec::compile(r, field)).transpose()
}

impl WorkloadLimits {
    /// Compiles the limits of a config.
    pub(crate) fn compile(ls: &[pb::WorkloadRateLimit]) -> Result<Self, ConfigError> {
        let mut limits = Vec::with_capacity(ls.len());
        for (i, l) in ls.iter().enumerate() {
            let f = format!("workload_rate_limits[{i}] ({}/{})", l.namespace, l.name);
            let ports = l
                .ports
                .iter()
                .map(|p| {
                    u16::try_from(*p)
                        .map_err(|_| ConfigError(format!("{f}.ports: port {p} out of range")))
                })
                .collect::<Result<_, _>>()?;
            let overrides = l
                .overrides
                .iter()
                .enumerate()
                .map(|(j, o)| {
                    let of = format!("{f}.overrides[{j}].limit");
                    let spec = spec(o.limit.as_ref(), &of)?
                        .ok_or_else(|| ConfigError(format!("{of}: missing")))?;
                    Ok(Override {
                        principals: o.principals.iter().cloned().collect(),
                        spec,
                    })
                })
                .collect::<Result<_, ConfigError>>()?;
            limits.push(Limit {
                name: format!("{}/{}", l.namespace, l.name),
                uids: l.workload_uids.iter().cloned().collect(),
                ports,
                total: spec(l.total.as_ref(), &format!("{f}.total"))?,
                per_identity: spec(l.per_identity.as_ref(), &format!("{f}.per_identity"))?,
                overrides,
            });
        }
        Ok(Self { limits })
    }

    /// Whether there is any limit (so requests keep what the check needs).
    pub(crate) fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    /// Takes the tokens of a request from `principal` to the workload `uid` on `port`: false
    /// when a bucket is empty (the request is answered 429).
    pub(crate) fn admit(
        &self,
        buckets: &LimitBuckets,
        uid: &str,
        port: u16,
        principal: Option<&str>,
    ) -> bool {
        for l in &self.limits {
            if !l.uids.contains(uid) || (!l.ports.is_empty() && !l.ports.contains(&port)) {
                continue;
            }
            let client = match l
                .overrides
                .iter()
                .enumerate()
                .find(|(_, o)| principal.is_some_and(|p| o.principals.contains(p)))
            {
                Some((i, o)) => Some((format!("override/{i}"), o.spec)),
                None => l
                    .per_identity
                    .map(|s| (format!("identity/{}", principal.unwrap_or("")), s)),
            };
            if let Some((key, spec)) = client
                && !buckets.get(&l.name, uid, &key, spec).try_take()
            {
                return false;
            }
            if let Some(spec) = l.total
                && !buckets.get(&l.name, uid, "total", spec).try_take()
            {
                return false;
            }
        }
        true
    }
}

/// The buckets of the workload limits, kept across configs (a bucket is replaced when its
/// limit changes), bounded.
#[derive(Debug, Default)]
pub(crate) struct LimitBuckets {
    by_key: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl LimitBuckets {
    fn get(&self, limit: &str, uid: &str, client: &str, spec: RateLimitSpec) -> Arc<Bucket> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = format!("{limit}|{uid}|{client}");
        if !by_key.contains_key(&key) && by_key.len() >= MAX_IDENTITY_BUCKETS {
            key = format!("{limit}|{uid}|overflow");
        }
        match by_key.get(&key) {
            Some(b) if b.spec() == spec => b.clone(),
            _ => {
                let b = Arc::new(Bucket::new(spec));
                by_key.insert(key, b.clone());
                b
            }
        }
    }

    /// Drops the buckets of limits a new config no longer has.
    pub(crate) fn retain(&self, limits: &WorkloadLimits) {
        let names: HashSet<&str> = limits.limits.iter().map(|l| l.name.as_str()).collect();
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.split('|').next().is_some_and(|n| names.contains(n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(n: u32) -> pb::LocalRateLimit {
        pb::LocalRateLimit {
            max_tokens: n,
            tokens_per_fill: 1,
            fill_interval: Some(api::prost_types::Duration {
                seconds: 0,
                nanos: (1_000_000_000 / n) as i32,
            }),
            source: None,
        }
    }

    fn limits() -> WorkloadLimits {
        WorkloadLimits::compile(&[pb::WorkloadRateLimit {
            name: "web".into(),
            namespace: "shop".into(),
            workload_uids: vec!["a".into(), "b".into()],
            ports: vec![8080],
            total: Some(per_second(5)),
            per_identity: Some(per_second(2)),
            overrides: vec![pb::IdentityRateLimit {
                principals: vec!["td/ns/shop/sa/vip".into()],
                limit: Some(per_second(4)),
            }],
        }])
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn identities_overrides_and_the_total_are_limited_per_workload() {
        let (l, b) = (limits(), LimitBuckets::default());
        let take = |uid: &str, who: Option<&str>| l.admit(&b, uid, 8080, who);
        assert_eq!(
            (0..5)
                .filter(|_| take("a", Some("td/ns/shop/sa/x")))
                .count(),
            2
        );
        // Clients without identity share one bucket.
        assert_eq!((0..5).filter(|_| take("a", None)).count(), 2);
        // The override's 4 exceed what is left of the total (5 - 4 = 1).
        assert_eq!(
            (0..5)
                .filter(|_| take("a", Some("td/ns/shop/sa/vip")))
                .count(),
            1
        );
        // Another workload has buckets of its own; other ports and workloads are not limited.
        assert_eq!(
            (0..5)
                .filter(|_| take("b", Some("td/ns/shop/sa/vip")))
                .count(),
            4
        );
        assert!((0..50).all(|_| l.admit(&b, "a", 9090, None)));
        assert!((0..50).all(|_| take("c", None)));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(
            (0..5)
                .filter(|_| take("a", Some("td/ns/shop/sa/x")))
                .count(),
            2
        );
        // A config without the limit drops its buckets.
        b.retain(&WorkloadLimits::default());
        assert!(b.by_key.lock().unwrap().is_empty());
    }

    #[test]
    fn an_override_without_a_limit_is_refused() {
        let bad = pb::WorkloadRateLimit {
            overrides: vec![pb::IdentityRateLimit::default()],
            ..Default::default()
        };
        assert!(WorkloadLimits::compile(&[bad]).is_err());
    }
}
