//! Fault injection: a delay and/or an abort, each applied to a percentage of requests.

use std::time::Duration;

use api::waypoint as pb;
use http::StatusCode;

use super::compile::{ConfigError, duration};

/// An injected abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Abort {
    /// HTTP status (used when `grpc_status` is 0).
    pub http_status: StatusCode,
    /// gRPC status of a trailers-only answer; 0: answer with `http_status`.
    pub grpc_status: u32,
}

/// A compiled [`pb::Fault`].
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultSpec {
    delay: Option<(Duration, f64)>,
    abort: Option<(Abort, f64)>,
}

fn percentage(p: f64, field: &str) -> Result<f64, ConfigError> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(ConfigError(format!(
            "{field}: percentage {p} not in 0..=100"
        )))
    }
}

/// Whether a request falls in `pct` percent.
pub(crate) fn roll(pct: f64) -> bool {
    pct >= 100.0 || (pct > 0.0 && fastrand::f64() * 100.0 < pct)
}

impl FaultSpec {
    /// Compiles a fault; `None` when it injects nothing.
    pub(crate) fn compile(f: &pb::Fault, field: &str) -> Result<Option<Self>, ConfigError> {
        let delay = match &f.delay {
            Some(d) => Some((
                duration(
                    d.fixed_delay.as_ref(),
                    &format!("{field}.delay.fixed_delay"),
                )?
                .unwrap_or_default(),
                percentage(d.percentage, &format!("{field}.delay.percentage"))?,
            )),
            None => None,
        };
        let abort = match &f.abort {
            Some(a) => {
                let http_status = u16::try_from(a.http_status)
                    .ok()
                    .filter(|s| (200..600).contains(s))
                    .and_then(|s| StatusCode::from_u16(s).ok());
                let http_status = match (http_status, a.grpc_status) {
                    (Some(s), _) => s,
                    // A gRPC abort answers 200 with the status in the trailers-only head.
                    (None, g) if g != 0 => StatusCode::OK,
                    (None, _) => {
                        return Err(ConfigError(format!(
                            "{field}.abort.http_status: {} is not a valid status",
                            a.http_status
                        )));
                    }
                };
                Some((
                    Abort {
                        http_status,
                        grpc_status: a.grpc_status,
                    },
                    percentage(a.percentage, &format!("{field}.abort.percentage"))?,
                ))
            }
            None => None,
        };
        if delay.is_none() && abort.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { delay, abort }))
    }

    /// The delay to inject into this request, if it is picked.
    pub(crate) fn roll_delay(&self) -> Option<Duration> {
        self.delay
            .and_then(|(d, pct)| (roll(pct) && !d.is_zero()).then_some(d))
    }

    /// The abort to answer this request with, if it is picked.
    pub(crate) fn roll_abort(&self) -> Option<Abort> {
        self.abort.and_then(|(a, pct)| roll(pct).then_some(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_hold_over_many_rolls() {
        let f = FaultSpec::compile(
            &pb::Fault {
                delay: Some(pb::FaultDelay {
                    fixed_delay: Some(api::prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    percentage: 100.0,
                }),
                abort: Some(pb::FaultAbort {
                    http_status: 503,
                    grpc_status: 0,
                    percentage: 25.0,
                }),
            },
            "f",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.roll_delay(), Some(Duration::from_secs(1)));
        let aborted = (0..10_000).filter(|_| f.roll_abort().is_some()).count();
        // 25 % of 10 000 has a standard deviation of ~43: six of them either side.
        assert!((2240..=2760).contains(&aborted), "{aborted}");
    }

    #[test]
    fn invalid_values_are_refused() {
        let bad_pct = pb::Fault {
            abort: Some(pb::FaultAbort {
                http_status: 503,
                grpc_status: 0,
                percentage: 101.0,
            }),
            ..Default::default()
        };
        assert!(FaultSpec::compile(&bad_pct, "f").is_err());
        let bad_status = pb::Fault {
            abort: Some(pb::FaultAbort {
                http_status: 42,
                grpc_status: 0,
                percentage: 1.0,
            }),
            ..Default::default()
        };
        assert!(FaultSpec::compile(&bad_status, "f").is_err());
        assert!(
            FaultSpec::compile(&pb::Fault::default(), "f")
                .unwrap()
                .is_none()
        );
        let grpc = pb::Fault {
            abort: Some(pb::FaultAbort {
                http_status: 0,
                grpc_status: 14,
                percentage: 100.0,
            }),
            ..Default::default()
        };
        let a = FaultSpec::compile(&grpc, "f")
            .unwrap()
            .unwrap()
            .roll_abort()
            .unwrap();
        assert_eq!(a.grpc_status, 14);
    }
}
