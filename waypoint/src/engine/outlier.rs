//! Passive health checking (Envoy's outlier detection): endpoints answering with consecutive
//! 5xx or gateway errors are ejected for the base ejection time × the number of times they
//! were ejected, never more than the maximum ejection percentage at once.

use std::time::Duration;

use api::waypoint as pb;
use tokio::time::Instant;

use super::compile::{ConfigError, duration};

/// A compiled [`pb::OutlierDetection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct OutlierSpec {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    interval: Duration,
    base_ejection: Duration,
    max_ejection_percent: u32,
}

impl OutlierSpec {
    /// Compiles outlier detection; `None` when no check is on. Unset durations take Envoy's
    /// defaults (10 s interval, 30 s base ejection time).
    pub(crate) fn compile(
        o: &pb::OutlierDetection,
        field: &str,
    ) -> Result<Option<Self>, ConfigError> {
        if o.consecutive_5xx_errors == 0 && o.consecutive_gateway_errors == 0 {
            return Ok(None);
        }
        if o.max_ejection_percent > 100 {
            return Err(ConfigError(format!(
                "{field}.max_ejection_percent: {} is over 100",
                o.max_ejection_percent
            )));
        }
        Ok(Some(Self {
            consecutive_5xx: o.consecutive_5xx_errors,
            consecutive_gateway: o.consecutive_gateway_errors,
            interval: duration(o.interval.as_ref(), &format!("{field}.interval"))?
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(10)),
            base_ejection: duration(
                o.base_ejection_time.as_ref(),
                &format!("{field}.base_ejection_time"),
            )?
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(30)),
            max_ejection_percent: o.max_ejection_percent,
        }))
    }
}

/// How an exchange with an endpoint went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Anything but an error below.
    Success,
    /// A 5xx other than 502/503/504.
    ServerError,
    /// 502, 503, 504, a connection failure, reset or timeout (Envoy counts locally originated
    /// failures as gateway errors when it does not split them out).
    GatewayError,
}

impl Health {
    /// Classifies a response status.
    pub(crate) fn of_status(status: u16) -> Self {
        match status {
            502..=504 => Health::GatewayError,
            500..=599 => Health::ServerError,
            _ => Health::Success,
        }
    }
}

/// Outlier state of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
    /// When the multiplier last decayed (or the last ejection ended).
    settled_at: Option<Instant>,
}

impl OutlierState {
    /// Whether the endpoint is out of rotation at `now`; an ejection that has run its time is
    /// ended here, and the ejection multiplier decays by one per interval spent healthy.
    pub(crate) fn is_ejected(&mut self, spec: Option<&OutlierSpec>, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if now < until => return true,
            Some(until) => {
                self.ejected_until = None;
                self.settled_at = Some(until);
            }
            None => {}
        }
        if let (Some(spec), Some(since)) = (spec, self.settled_at)
            && self.ejections > 0
        {
            let healthy = now.saturating_duration_since(since);
            let steps = (healthy.as_nanos() / spec.interval.as_nanos().max(1)) as u32;
            if steps > 0 {
                self.ejections = self.ejections.saturating_sub(steps);
                self.settled_at = Some(since + spec.interval * steps);
            }
        }
        false
    }

    /// Records one exchange; returns true when the endpoint should now be ejected (the caller
    /// checks the ejection percentage and then calls [`OutlierState::eject`]).
    pub(crate) fn record(&mut self, spec: &OutlierSpec, health: Health) -> bool {
        match health {
            Health::Success => {
                self.consecutive_5xx = 0;
                self.consecutive_gateway = 0;
                false
            }
            Health::ServerError => {
                self.consecutive_5xx += 1;
                self.consecutive_gateway = 0;
                self.tripped(spec)
            }
            Health::GatewayError => {
                self.consecutive_5xx += 1;
                self.consecutive_gateway += 1;
                self.tripped(spec)
            }
        }
    }

    fn tripped(&self, spec: &OutlierSpec) -> bool {
        self.ejected_until.is_none()
            && ((spec.consecutive_5xx > 0 && self.consecutive_5xx >= spec.consecutive_5xx)
                || (spec.consecutive_gateway > 0
                    && self.consecutive_gateway >= spec.consecutive_gateway))
    }

    /// Ejects the endpoint for base × (number of ejections) and restarts its counters;
    /// returns when the ejection ends.
    pub(crate) fn eject(&mut self, spec: &OutlierSpec, now: Instant) -> Instant {
        self.ejections = self.ejections.saturating_add(1);
        let until = now + spec.base_ejection * self.ejections.min(1000);
        self.ejected_until = Some(until);
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        until
    }

    /// Forgets the current streak without ejecting (the percentage cap refused it).
    pub(crate) fn reset_streak(&mut self) {
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
    }
}

/// Whether one more endpoint may be ejected when `ejected` of `total` already are: at most
/// `max_ejection_percent`, but always at least one, as Envoy allows.
pub(crate) fn may_eject(spec: &OutlierSpec, ejected: usize, total: usize) -> bool {
    if total == 0 {
        return false;
    }
    ejected == 0 || (ejected + 1) * 100 <= spec.max_ejection_percent as usize * total
}

/// Specs other modules' tests use.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// One gateway error ejects for 30 s, up to half of the endpoints.
    pub(crate) fn one_error_ejects() -> OutlierSpec {
        OutlierSpec {
            consecutive_5xx: 0,
            consecutive_gateway: 1,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> OutlierSpec {
        OutlierSpec::compile(
            &pb::OutlierDetection {
                consecutive_5xx_errors: 3,
                consecutive_gateway_errors: 0,
                interval: Some(api::prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                base_ejection_time: Some(api::prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                max_ejection_percent: 50,
            },
            "o",
        )
        .unwrap()
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_streak_and_returns_after_base_time() {
        let s = spec();
        let mut st = OutlierState::default();
        assert!(!st.record(&s, Health::ServerError));
        assert!(!st.record(&s, Health::Success));
        assert!(!st.record(&s, Health::ServerError));
        assert!(!st.record(&s, Health::GatewayError));
        assert!(st.record(&s, Health::ServerError));
        let now = Instant::now();
        st.eject(&s, now);
        assert!(st.is_ejected(Some(&s), now));
        assert!(st.is_ejected(Some(&s), now + Duration::from_secs(29)));
        assert!(!st.is_ejected(Some(&s), now + Duration::from_secs(30)));
        // A second ejection soon after lasts twice as long.
        let later = now + Duration::from_secs(30);
        st.eject(&s, later);
        assert!(st.is_ejected(Some(&s), later + Duration::from_secs(59)));
        assert!(!st.is_ejected(Some(&s), later + Duration::from_secs(60)));
    }

    #[test]
    fn ejection_percentage() {
        let s = spec();
        assert!(may_eject(&s, 0, 1));
        assert!(may_eject(&s, 0, 4));
        assert!(may_eject(&s, 1, 4));
        assert!(!may_eject(&s, 2, 4));
        assert!(!may_eject(&s, 0, 0));
    }

    #[test]
    fn off_when_no_check() {
        assert!(
            OutlierSpec::compile(&pb::OutlierDetection::default(), "o")
                .unwrap()
                .is_none()
        );
    }
}
