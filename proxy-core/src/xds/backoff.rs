//! Exponential backoff with jitter, so that the node proxies of a cluster do not reconnect to
//! a restarted controller in lockstep.

use std::time::Duration;

/// Doubling delays between `initial` and `max`; each delay drawn uniformly from the upper
/// half of the current step.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Default for Backoff {
    /// 100 ms doubling up to 15 s.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(15))
    }
}

impl Backoff {
    /// Delays starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// The next delay to wait; the following one will be about twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    /// Back to the shortest delay (after a success).
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_bounds_and_resets() {
        let mut b = Backoff::default();
        let mut upper = Duration::from_millis(100);
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(
                d >= upper / 2 && d <= upper,
                "{d:?} not in [{:?}, {upper:?}]",
                upper / 2
            );
            upper = (upper * 2).min(Duration::from_secs(15));
        }
        assert_eq!(upper, Duration::from_secs(15));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
