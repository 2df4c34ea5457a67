//! Retry policy (Envoy's `retry_on` conditions), the idempotency rule, backoff and the
//! Linkerd-style retry budget.

use std::sync::Mutex;
use std::time::Duration;

use api::waypoint as pb;
use http::{Method, StatusCode};
use tokio::time::Instant;

use super::compile::{ConfigError, duration};

/// Envoy's default base interval between retries.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(25);

/// Retry conditions, one bit each.
mod on {
    pub const FIVE_XX: u32 = 1 << 0;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const RESET: u32 = 1 << 2;
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    pub const REFUSED_STREAM: u32 = 1 << 4;
    pub const RETRIABLE_4XX: u32 = 1 << 5;
    pub const STATUS_CODES: u32 = 1 << 6;
    pub const CANCELLED: u32 = 1 << 7;
    pub const DEADLINE_EXCEEDED: u32 = 1 << 8;
    pub const INTERNAL: u32 = 1 << 9;
    pub const RESOURCE_EXHAUSTED: u32 = 1 << 10;
    pub const UNAVAILABLE: u32 = 1 << 11;
    pub const RESET_BEFORE_REQUEST: u32 = 1 << 12;
}

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response arrived; `grpc` is the `grpc-status` of its head, if any.
    Response(StatusCode, Option<u32>),
    /// No connection to the endpoint (the endpoint never saw the request).
    ConnectFailure,
    /// The exchange broke after the connection was made.
    Reset,
    /// The per-try timeout expired.
    Timeout,
}

/// A compiled [`pb::RetryPolicy`].
#[derive(Debug, Clone)]
pub(crate) struct RetrySpec {
    /// Retries after the first attempt.
    pub attempts: u32,
    on: u32,
    codes: Vec<u16>,
    backoff: Duration,
    non_idempotent: bool,
}

impl RetrySpec {
    /// Compiles a retry policy; `None` when it retries nothing.
    pub(crate) fn compile(r: &pb::RetryPolicy, field: &str) -> Result<Option<Self>, ConfigError> {
        if r.attempts == 0 {
            return Ok(None);
        }
        let mut bits = 0;
        for (i, c) in r.retry_on.iter().enumerate() {
            bits |= match c.trim() {
                "5xx" => on::FIVE_XX,
                "gateway-error" => on::GATEWAY_ERROR,
                "reset" => on::RESET,
                "reset-before-request" => on::RESET_BEFORE_REQUEST,
                "connect-failure" => on::CONNECT_FAILURE,
                "refused-stream" => on::REFUSED_STREAM,
                "retriable-4xx" => on::RETRIABLE_4XX,
                "retriable-status-codes" => on::STATUS_CODES,
                "cancelled" => on::CANCELLED,
                "deadline-exceeded" => on::DEADLINE_EXCEEDED,
                "internal" => on::INTERNAL,
                "resource-exhausted" => on::RESOURCE_EXHAUSTED,
                "unavailable" => on::UNAVAILABLE,
                other => {
                    return Err(ConfigError(format!(
                        "{field}.retry_on[{i}]: unknown condition {other:?}"
                    )));
                }
            };
        }
        let codes = r
            .retriable_status_codes
            .iter()
            .map(|c| {
                u16::try_from(*c)
                    .ok()
                    .filter(|c| (100..600).contains(c))
                    .ok_or_else(|| ConfigError(format!("{field}.retriable_status_codes: {c}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Self {
            attempts: r.attempts,
            on: bits,
            codes,
            backoff: duration(r.backoff.as_ref(), &format!("{field}.backoff"))?
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_BACKOFF),
            non_idempotent: r.retry_non_idempotent,
        }))
    }

    /// Whether an attempt that ended with `outcome` may be repeated for a `method` request.
    pub(crate) fn should_retry(&self, outcome: Outcome, method: &Method) -> bool {
        let never_sent = matches!(outcome, Outcome::ConnectFailure);
        if !never_sent && !self.non_idempotent && !idempotent(method) {
            return false;
        }
        let has = |bit: u32| self.on & bit != 0;
        match outcome {
            Outcome::ConnectFailure => {
                has(on::CONNECT_FAILURE)
                    || has(on::REFUSED_STREAM)
                    || has(on::RESET)
                    || has(on::RESET_BEFORE_REQUEST)
                    || has(on::FIVE_XX)
                    || has(on::GATEWAY_ERROR)
            }
            Outcome::Reset | Outcome::Timeout => {
                has(on::RESET) || has(on::FIVE_XX) || has(on::GATEWAY_ERROR)
            }
            Outcome::Response(status, grpc) => {
                let code = status.as_u16();
                if has(on::FIVE_XX) && status.is_server_error() {
                    return true;
                }
                if has(on::GATEWAY_ERROR) && matches!(code, 502..=504) {
                    return true;
                }
                if has(on::RETRIABLE_4XX) && code == 409 {
                    return true;
                }
                if has(on::STATUS_CODES) && self.codes.contains(&code) {
                    return true;
                }
                match grpc {
                    Some(1) => has(on::CANCELLED),
                    Some(4) => has(on::DEADLINE_EXCEEDED),
                    Some(8) => has(on::RESOURCE_EXHAUSTED),
                    Some(13) => has(on::INTERNAL),
                    Some(14) => has(on::UNAVAILABLE),
                    _ => false,
                }
            }
        }
    }

    /// Wait before retry number `retry` (1-based): fully jittered exponential backoff capped at
    /// ten times the base, as Envoy does.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let base = self.backoff.as_micros().max(1) as u64;
        let ceiling = base
            .saturating_mul(1u64 << retry.clamp(1, 16).saturating_sub(1).min(10))
            .min(base * 10);
        Duration::from_micros(fastrand::u64(0..=ceiling))
    }
}

/// Methods a retry may repeat without the client asking: their repetition has the effect of
/// one request (RFC 9110 §9.2.2).
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A compiled [`pb::RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BudgetSpec {
    ratio: f64,
    min_per_second: u32,
    ttl: Duration,
}

impl BudgetSpec {
    /// Compiles a budget (Linkerd's default ttl of 10 s when unset).
    pub(crate) fn compile(b: &pb::RetryBudget, field: &str) -> Result<Self, ConfigError> {
        if !b.retry_ratio.is_finite() || b.retry_ratio < 0.0 {
            return Err(ConfigError(format!(
                "{field}.retry_ratio: {} is not a ratio",
                b.retry_ratio
            )));
        }
        let ttl = duration(b.ttl.as_ref(), &format!("{field}.ttl"))?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(10));
        Ok(Self {
            ratio: b.retry_ratio,
            min_per_second: b.min_retries_per_second,
            ttl,
        })
    }
}

/// Slots of the sliding window: the budget forgets requests one tenth of a ttl at a time.
const SLOTS: usize = 10;

/// Requests and retries counted over a sliding window of one ttl.
#[derive(Debug)]
pub(crate) struct Budget {
    spec: BudgetSpec,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    /// Start of slot 0's current period.
    epoch: Instant,
    /// Index of the newest slot since `epoch`.
    newest: u64,
    requests: [u64; SLOTS],
    retries: [u64; SLOTS],
}

impl Budget {
    /// A fresh budget.
    pub(crate) fn new(spec: BudgetSpec) -> Self {
        Self {
            spec,
            window: Mutex::new(Window {
                epoch: Instant::now(),
                newest: 0,
                requests: [0; SLOTS],
                retries: [0; SLOTS],
            }),
        }
    }

    /// The configuration it enforces.
    pub(crate) fn spec(&self) -> BudgetSpec {
        self.spec
    }

    fn advance(&self, w: &mut Window) -> usize {
        let slot_len = (self.spec.ttl / SLOTS as u32).max(Duration::from_millis(1));
        let now_slot = (Instant::now()
            .saturating_duration_since(w.epoch)
            .as_micros()
            / slot_len.as_micros().max(1)) as u64;
        // Clear the slots that expired since the newest write.
        let stale = now_slot.saturating_sub(w.newest).min(SLOTS as u64);
        for k in 1..=stale {
            let i = ((w.newest + k) % SLOTS as u64) as usize;
            w.requests[i] = 0;
            w.retries[i] = 0;
        }
        w.newest = w.newest.max(now_slot);
        (w.newest % SLOTS as u64) as usize
    }

    /// Counts an original request.
    pub(crate) fn record_request(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let i = self.advance(&mut w);
        w.requests[i] += 1;
    }

    /// Takes a retry from the budget, if it allows one.
    pub(crate) fn try_retry(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let i = self.advance(&mut w);
        let requests: u64 = w.requests.iter().sum();
        let retries: u64 = w.retries.iter().sum();
        let allowed = self.spec.ratio * requests as f64
            + f64::from(self.spec.min_per_second) * self.spec.ttl.as_secs_f64();
        if (retries as f64) < allowed {
            w.retries[i] += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(on: &[&str], non_idempotent: bool) -> RetrySpec {
        RetrySpec::compile(
            &pb::RetryPolicy {
                attempts: 2,
                retry_on: on.iter().map(|s| s.to_string()).collect(),
                retriable_status_codes: vec![418],
                backoff: None,
                retry_non_idempotent: non_idempotent,
            },
            "r",
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn conditions() {
        let s = spec(&["gateway-error"], false);
        let get = Method::GET;
        assert!(s.should_retry(Outcome::Response(StatusCode::BAD_GATEWAY, None), &get));
        assert!(!s.should_retry(
            Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR, None),
            &get
        ));
        assert!(s.should_retry(Outcome::Timeout, &get));
        let s = spec(&["5xx"], false);
        assert!(s.should_retry(
            Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR, None),
            &get
        ));
        assert!(s.should_retry(Outcome::Reset, &get));
        assert!(!s.should_retry(Outcome::Response(StatusCode::CONFLICT, None), &get));
        let s = spec(&["retriable-4xx", "retriable-status-codes"], false);
        assert!(s.should_retry(Outcome::Response(StatusCode::CONFLICT, None), &get));
        assert!(s.should_retry(Outcome::Response(StatusCode::IM_A_TEAPOT, None), &get));
        let s = spec(&["unavailable"], false);
        assert!(s.should_retry(Outcome::Response(StatusCode::OK, Some(14)), &get));
        assert!(!s.should_retry(Outcome::Response(StatusCode::OK, Some(13)), &get));
        assert!(
            RetrySpec::compile(
                &pb::RetryPolicy {
                    attempts: 1,
                    retry_on: vec!["sometimes".into()],
                    ..Default::default()
                },
                "r"
            )
            .is_err()
        );
    }

    #[test]
    fn non_idempotent_only_when_unsent_or_asked() {
        let s = spec(&["5xx", "connect-failure"], false);
        let post = Method::POST;
        assert!(!s.should_retry(
            Outcome::Response(StatusCode::SERVICE_UNAVAILABLE, None),
            &post
        ));
        assert!(!s.should_retry(Outcome::Reset, &post));
        assert!(s.should_retry(Outcome::ConnectFailure, &post));
        let s = spec(&["5xx"], true);
        assert!(s.should_retry(
            Outcome::Response(StatusCode::SERVICE_UNAVAILABLE, None),
            &post
        ));
    }

    #[test]
    fn backoff_is_bounded() {
        let s = spec(&["5xx"], false);
        for retry in 1..20 {
            assert!(s.backoff(retry) <= Duration::from_millis(250));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn budget_limits_and_recovers() {
        let b = Budget::new(BudgetSpec {
            ratio: 0.2,
            min_per_second: 0,
            ttl: Duration::from_secs(10),
        });
        for _ in 0..10 {
            b.record_request();
        }
        assert!(b.try_retry());
        assert!(b.try_retry());
        assert!(!b.try_retry());
        tokio::time::advance(Duration::from_secs(11)).await;
        // The window has forgotten both requests and retries.
        assert!(!b.try_retry());
        for _ in 0..5 {
            b.record_request();
        }
        assert!(b.try_retry());
        assert!(!b.try_retry());
        let floor = Budget::new(BudgetSpec {
            ratio: 0.0,
            min_per_second: 1,
            ttl: Duration::from_secs(2),
        });
        assert!(floor.try_retry());
        assert!(floor.try_retry());
        assert!(!floor.try_retry());
    }
}
