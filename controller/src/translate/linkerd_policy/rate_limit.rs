//! Linkerd's HTTPLocalRateLimitPolicy: the request rates a Server admits, overall, per client
//! identity and for named service accounts; enforced by the waypoint serving the Server's pods,
//! each pod limited on its own (as each Linkerd proxy limits its own pod), answered 429.
//!
//! Linkerd's limiter is a GCRA with a tolerance of one second: a burst of up to one second's
//! worth of requests, then the rate. The waypoint's token bucket of that size, refilled one
//! token every 1/rate second, admits the same.

use std::collections::BTreeMap;
use std::time::Duration;

use api::waypoint::{ConfigSource, IdentityRateLimit, LocalRateLimit};
use serde_json::Value;

use super::decode::{self, Invalid};
use crate::model::linkerd::{HttpLocalRateLimitPolicySpec, LINKERD_POLICY_GROUP};
use crate::model::{ObjectKey, Problem, WARNING_PREFIX};

/// The index's kind.
pub const KIND: &str = "HTTPLocalRateLimitPolicy";

/// A validated policy.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RateLimitDef {
    /// Its name.
    pub name: String,
    /// Where it was read.
    pub origin: String,
    /// The limit of all requests.
    pub total: Option<LocalRateLimit>,
    /// The limit of each identity.
    pub identity: Option<LocalRateLimit>,
    /// The limits of named clients.
    pub overrides: Vec<IdentityRateLimit>,
}

/// Policies by Server (namespace, name).
pub(super) type RateLimits = BTreeMap<(String, String), RateLimitDef>;

/// A bucket admitting `rps` requests per second, with a burst of one second's worth.
fn per_second(rps: i64, field: &str, source: &ConfigSource) -> Result<LocalRateLimit, Invalid> {
    let rate = u32::try_from(rps)
        .ok()
        .filter(|r| (1..=1_000_000_000).contains(r))
        .ok_or_else(|| {
            (
                format!("{field}.requestsPerSecond"),
                format!("{rps} is not a rate (1 to 1000000000 requests per second)"),
            )
        })?;
    let interval = Duration::from_nanos(1_000_000_000 / u64::from(rate));
    Ok(LocalRateLimit {
        max_tokens: rate,
        tokens_per_fill: 1,
        fill_interval: Some(api::prost_types::Duration {
            seconds: 0,
            nanos: i32::try_from(interval.subsec_nanos()).unwrap_or(i32::MAX),
        }),
        source: Some(source.clone()),
    })
}

/// Decodes one policy: the Server it limits, and the limits.
pub(super) fn policy(
    key: &ObjectKey,
    origin: &str,
    value: &Value,
    trust_domain: &str,
) -> Result<(String, RateLimitDef), Invalid> {
    let s: HttpLocalRateLimitPolicySpec = decode::spec(value)?;
    let t = &s.target_ref;
    if t.kind != "Server" || t.group != LINKERD_POLICY_GROUP || t.name.is_empty() {
        return Err((
            "spec.targetRef".to_owned(),
            format!("must name a Server of {LINKERD_POLICY_GROUP}"),
        ));
    }
    let source = ConfigSource {
        kind: KIND.to_owned(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
    };
    let total = s.total.as_ref().map(|r| r.requests_per_second);
    let at_most_total = |rps: i64, field: &str| match total {
        Some(t) if rps > t => Err((
            format!("{field}.requestsPerSecond"),
            format!("{rps} is more than the total, {t}"),
        )),
        _ => Ok(()),
    };
    let mut overrides = Vec::new();
    for (i, o) in s.overrides.iter().enumerate() {
        let f = format!("spec.overrides[{i}]");
        at_most_total(o.requests_per_second, &f)?;
        let mut principals = Vec::new();
        for (j, c) in o.client_refs.iter().enumerate() {
            let cf = format!("{f}.clientRefs[{j}]");
            if c.kind != "ServiceAccount" || !(c.group.is_empty() || c.group == "core") {
                return Err((format!("{cf}.kind"), "only ServiceAccount".to_owned()));
            }
            if c.name.is_empty() {
                return Err((format!("{cf}.name"), "missing".to_owned()));
            }
            let ns = if c.namespace.is_empty() {
                &key.namespace
            } else {
                &c.namespace
            };
            principals.push(format!("{trust_domain}/ns/{ns}/sa/{}", c.name));
        }
        overrides.push(IdentityRateLimit {
            principals,
            limit: Some(per_second(o.requests_per_second, &f, &source)?),
        });
    }
    let identity = match &s.identity {
        Some(r) => {
            at_most_total(r.requests_per_second, "spec.identity")?;
            Some(per_second(r.requests_per_second, "spec.identity", &source)?)
        }
        None => None,
    };
    let def = RateLimitDef {
        name: key.name.clone(),
        origin: origin.to_owned(),
        total: s
            .total
            .as_ref()
            .map(|r| per_second(r.requests_per_second, "spec.total", &source))
            .transpose()?,
        identity,
        overrides,
    };
    Ok((t.name.clone(), def))
}

/// A warning for a second policy of the same Server: Linkerd admits one; the first by name is
/// kept.
pub(super) fn second(origin: &str, key: &ObjectKey, kept: &str, server: &str) -> Problem {
    decode::problem(
        origin,
        key,
        (
            "spec.targetRef.name".to_owned(),
            format!(
                "{WARNING_PREFIX}the Server {server:?} already has the HTTPLocalRateLimitPolicy \
                 {kept:?} (one per Server): this one is not enforced"
            ),
        ),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decoded(spec: Value) -> Result<(String, RateLimitDef), Invalid> {
        let key = ObjectKey::new(KIND, "shop", "rl");
        policy(&key, "f.yaml", &json!({"spec": spec}), "cluster.local")
    }

    #[test]
    fn limits_become_buckets_of_one_seconds_burst() {
        let (server, def) = decoded(json!({
            "targetRef": {"group": "policy.linkerd.io", "kind": "Server", "name": "web"},
            "total": {"requestsPerSecond": 100},
            "identity": {"requestsPerSecond": 20},
            "overrides": [{"requestsPerSecond": 25, "clientRefs": [
                {"kind": "ServiceAccount", "name": "special", "namespace": "emojivoto"}
            ]}]
        }))
        .unwrap();
        assert_eq!(server, "web");
        let total = def.total.unwrap();
        assert_eq!((total.max_tokens, total.tokens_per_fill), (100, 1));
        assert_eq!(total.fill_interval.unwrap().nanos, 10_000_000);
        assert_eq!(def.identity.unwrap().max_tokens, 20);
        assert_eq!(
            def.overrides[0].principals,
            ["cluster.local/ns/emojivoto/sa/special"]
        );
    }

    #[test]
    fn bad_limits_are_refused_with_their_field() {
        let target = json!({"group": "policy.linkerd.io", "kind": "Server", "name": "web"});
        let cases = [
            (
                json!({"targetRef": {"kind": "Service", "name": "web"}}),
                "spec.targetRef",
            ),
            (
                json!({"targetRef": target, "identity": {"requestsPerSecond": 0}}),
                "spec.identity.requestsPerSecond",
            ),
            (
                json!({"targetRef": target, "total": {"requestsPerSecond": 5},
                       "identity": {"requestsPerSecond": 6}}),
                "spec.identity.requestsPerSecond",
            ),
            (
                json!({"targetRef": target, "overrides": [{"requestsPerSecond": 1,
                       "clientRefs": [{"kind": "Namespace", "name": "x"}]}]}),
                "spec.overrides[0].clientRefs[0].kind",
            ),
            (
                json!({"targetRef": target, "identity": {"requestPerSecond": 4}}),
                "spec.identity.requestPerSecond",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(decoded(spec.clone()).unwrap_err().0, field, "{spec}");
        }
    }
}
