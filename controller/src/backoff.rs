//! Delays between retries of a failing watch or call.

use std::time::Duration;

/// Doubling delays from one second up to `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at one second.
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: Duration::from_secs(1),
            max,
        }
    }

    /// Back to one second, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = Duration::from_secs(1);
    }

    /// The delay to wait now; the next one doubles.
    pub(crate) fn step(&mut self) -> Duration {
        let now = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        let steps: Vec<u64> = (0..5).map(|_| backoff.step().as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 5, 5]);
        backoff.reset();
        assert_eq!(backoff.step(), Duration::from_secs(1));
    }
}
