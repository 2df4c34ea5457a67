//! Endpoint choice: least outstanding requests among two random candidates (the default),
//! round robin, or random; with the per-endpoint counters that feed it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use api::waypoint::LoadBalancer;

use super::outlier::OutlierState;
use super::upstream::EndpointInfo;

/// What the waypoint knows about one endpoint across requests.
#[derive(Debug, Default)]
pub(crate) struct EndpointState {
    in_flight: AtomicU64,
    outlier: Mutex<OutlierState>,
}

impl EndpointState {
    /// Requests outstanding to this endpoint.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Its outlier-detection state.
    pub(crate) fn outlier(&self) -> MutexGuard<'_, OutlierState> {
        self.outlier.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request as outstanding until the guard drops.
    pub(crate) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One outstanding request to an endpoint.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An endpoint the balancer may choose; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Where it is.
    pub info: Arc<EndpointInfo>,
    /// Its counters.
    pub state: Arc<EndpointState>,
}

/// Chooses among `candidates` (already filtered to healthy, in-subset endpoints).
pub(crate) fn pick<'a>(
    lb: LoadBalancer,
    candidates: &'a [Candidate],
    round_robin: &AtomicUsize,
) -> Option<&'a Candidate> {
    match candidates.len() {
        0 => None,
        1 => candidates.first(),
        n => match lb {
            LoadBalancer::RoundRobin => {
                candidates.get(round_robin.fetch_add(1, Ordering::Relaxed) % n)
            }
            LoadBalancer::Random => candidates.get(fastrand::usize(..n)),
            LoadBalancer::LeastRequest => {
                // Power of two choices: two distinct random endpoints, the less loaded wins.
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (ca, cb) = (&candidates[a], &candidates[b]);
                if cb.state.in_flight() < ca.state.in_flight() {
                    Some(cb)
                } else {
                    Some(ca)
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                info: Arc::new(EndpointInfo {
                    uid: format!("w{i}"),
                    address: format!("10.0.0.{}:80", i + 1).parse().unwrap(),
                }),
                state: Arc::default(),
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let c = candidates(3);
        let rr = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6)
            .map(|_| {
                pick(LoadBalancer::RoundRobin, &c, &rr)
                    .unwrap()
                    .info
                    .uid
                    .clone()
            })
            .collect();
        assert_eq!(picks, ["w0", "w1", "w2", "w0", "w1", "w2"]);
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let c = candidates(2);
        let rr = AtomicUsize::new(0);
        let _busy: Vec<_> = (0..5).map(|_| c[0].state.start()).collect();
        for _ in 0..100 {
            assert_eq!(
                pick(LoadBalancer::LeastRequest, &c, &rr).unwrap().info.uid,
                "w1"
            );
        }
        drop(_busy);
        assert_eq!(c[0].state.in_flight(), 0);
    }

    #[test]
    fn random_spreads_and_empty_is_none() {
        let c = candidates(4);
        let rr = AtomicUsize::new(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            seen.insert(
                pick(LoadBalancer::Random, &c, &rr)
                    .unwrap()
                    .info
                    .uid
                    .clone(),
            );
        }
        assert_eq!(seen.len(), 4);
        assert!(pick(LoadBalancer::Random, &[], &rr).is_none());
    }
}
