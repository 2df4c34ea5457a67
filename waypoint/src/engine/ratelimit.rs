//! Local rate limiting: a token bucket per service, as Envoy's `local_ratelimit` filter keeps.

use std::sync::Mutex;
use std::time::Duration;

use api::waypoint as pb;
use tokio::time::Instant;

use super::compile::{ConfigError, duration};

/// A compiled [`pb::LocalRateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimitSpec {
    max_tokens: u32,
    tokens_per_fill: u32,
    fill_interval: Duration,
}

impl RateLimitSpec {
    /// Compiles a limit; a bucket that could never hold a token or never refill is refused.
    pub(crate) fn compile(r: &pb::LocalRateLimit, field: &str) -> Result<Self, ConfigError> {
        let fill_interval = duration(r.fill_interval.as_ref(), &format!("{field}.fill_interval"))?
            .unwrap_or_default();
        if r.max_tokens == 0 {
            return Err(ConfigError(format!("{field}.max_tokens: must be > 0")));
        }
        if fill_interval.is_zero() {
            return Err(ConfigError(format!("{field}.fill_interval: must be > 0")));
        }
        Ok(Self {
            max_tokens: r.max_tokens,
            tokens_per_fill: r.tokens_per_fill.max(1),
            fill_interval,
        })
    }
}

/// A token bucket: starts full; every `fill_interval` adds `tokens_per_fill`, up to the
/// maximum. Refills are computed when a token is taken rather than by a timer.
#[derive(Debug)]
pub(crate) struct Bucket {
    spec: RateLimitSpec,
    state: Mutex<(u32, Instant)>,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(spec: RateLimitSpec) -> Self {
        Self {
            spec,
            state: Mutex::new((spec.max_tokens, Instant::now())),
        }
    }

    /// The limit it enforces.
    pub(crate) fn spec(&self) -> RateLimitSpec {
        self.spec
    }

    /// Takes a token; false when none is left (answer 429).
    pub(crate) fn try_take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last_fill) = &mut *state;
        let now = Instant::now();
        let fills = now.saturating_duration_since(*last_fill).as_nanos()
            / self.spec.fill_interval.as_nanos().max(1);
        if fills > 0 {
            let added = u64::from(self.spec.tokens_per_fill).saturating_mul(fills as u64);
            *tokens = (u64::from(*tokens) + added).min(u64::from(self.spec.max_tokens)) as u32;
            // Keep the fill grid: the next fill is one interval after the last whole one.
            *last_fill += self.spec.fill_interval * (fills.min(u128::from(u32::MAX)) as u32);
        }
        if *tokens > 0 {
            *tokens -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_empties_and_refills() {
        let spec = RateLimitSpec::compile(
            &pb::LocalRateLimit {
                max_tokens: 3,
                tokens_per_fill: 2,
                fill_interval: Some(api::prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                source: None,
            },
            "r",
        )
        .unwrap();
        let b = Bucket::new(spec);
        assert!((0..3).all(|_| b.try_take()));
        assert!(!b.try_take());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_take());
        assert!(b.try_take());
        assert!(!b.try_take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..10).filter(|_| b.try_take()).count(), 3);
    }

    #[test]
    fn unusable_buckets_are_refused() {
        let r = pb::LocalRateLimit {
            max_tokens: 0,
            tokens_per_fill: 1,
            fill_interval: Some(api::prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            source: None,
        };
        assert!(RateLimitSpec::compile(&r, "r").is_err());
        let r = pb::LocalRateLimit {
            max_tokens: 1,
            fill_interval: None,
            ..r
        };
        assert!(RateLimitSpec::compile(&r, "r").is_err());
    }
}
