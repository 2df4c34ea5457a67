//! The endpoints a destination (service, subset and port) may send to, built once per mesh
//! state version rather than once per attempt.
//!
//! Each destination of a compiled config owns an [`EndpointCache`] of its service; the list it
//! holds (the service's endpoints, filtered to the subset, each with its counters) is rebuilt
//! only when the upstream's state version changes, or the request arrived on another port.
//! An attempt then chooses among it directly; only when endpoints are ejected or a retry
//! avoids those already tried does it filter a copy.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use api::waypoint::LoadBalancer;
use tokio::time::Instant;

use super::balance::{self, Candidate};
use super::outlier::OutlierSpec;
use super::runtime::UpstreamState;
use super::upstream::{StateStamp, UpstreamClient, state_stamp};

/// Ports one destination keeps lists for (a route without a port serves every port of its
/// service); the oldest goes first.
const PORTS_KEPT: usize = 4;

/// The candidate lists of one destination. It knows which service it lists, so that it
/// needs nothing from the compiled config that owns it.
pub(crate) struct EndpointCache {
    /// Namespace of the service.
    namespace: String,
    /// Hostname of the service.
    hostname: String,
    lists: Mutex<Vec<PortList>>,
}

impl std::fmt::Debug for EndpointCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointCache").finish_non_exhaustive()
    }
}

struct PortList {
    /// The upstream state the list came from.
    stamp: StateStamp,
    /// The runtime state whose counters the candidates carry.
    state: Arc<UpstreamState>,
    port: u16,
    candidates: Arc<[Candidate]>,
}

impl EndpointCache {
    /// An empty cache of service `hostname` in `namespace`.
    pub(crate) fn new(namespace: &str, hostname: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            hostname: hostname.to_owned(),
            lists: Mutex::default(),
        }
    }

    /// The endpoints of the service on `port`, in `subset` when given, each with its counters
    /// in `state`; from the cache while `upstream`'s state has not changed.
    pub(crate) fn candidates(
        &self,
        upstream: &Arc<dyn UpstreamClient>,
        state: &Arc<UpstreamState>,
        port: u16,
        subset: Option<&HashSet<String>>,
    ) -> Arc<[Candidate]> {
        let stamp = state_stamp(upstream);
        if let Some(stamp) = stamp {
            let lists = self.lock();
            if let Some(list) = lists
                .iter()
                .find(|s| s.port == port && s.stamp == stamp && Arc::ptr_eq(&s.state, state))
            {
                return list.candidates.clone();
            }
        }
        let listed = upstream.endpoints(&self.namespace, &self.hostname, port);
        let candidates: Arc<[Candidate]> = state.candidates(listed, subset).into();
        if let Some(stamp) = stamp {
            let mut lists = self.lock();
            lists.retain(|s| s.port != port);
            if lists.len() >= PORTS_KEPT {
                lists.remove(0);
            }
            lists.push(PortList {
                stamp,
                state: state.clone(),
                port,
                candidates: candidates.clone(),
            });
        }
        candidates
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PortList>> {
        // Slots are replaced whole: usable after a panic elsewhere.
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Chooses among `candidates` with `lb`: those not ejected (under `outlier`: without it no
/// endpoint is) and, when possible, not in `avoid` (Istio's previous-hosts predicate for
/// retries).
pub(crate) fn choose(
    state: &UpstreamState,
    lb: LoadBalancer,
    candidates: &[Candidate],
    outlier: Option<&OutlierSpec>,
    avoid: &[SocketAddr],
) -> Option<Candidate> {
    if avoid.is_empty() && !state.any_ejected() {
        return balance::pick(lb, candidates, &state.round_robin).cloned();
    }
    let now = Instant::now();
    let mut left: Vec<Candidate> = candidates
        .iter()
        .filter(|c| outlier.is_none() || !c.state.outlier().is_ejected(outlier, now))
        .cloned()
        .collect();
    if !avoid.is_empty() && left.iter().any(|c| !avoid.contains(&c.info.address)) {
        left.retain(|c| !avoid.contains(&c.info.address));
    }
    balance::pick(lb, &left, &state.round_robin).cloned()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use http::Request;

    use super::*;
    use crate::engine::outlier::Health;
    use crate::engine::{Body, Caller, EndpointInfo, UpstreamError};

    /// Endpoints whose list and version the test changes, counting how often they are listed.
    #[derive(Default)]
    struct Listing {
        endpoints: Mutex<Vec<EndpointInfo>>,
        version: AtomicU64,
        listed: AtomicUsize,
    }

    impl UpstreamClient for Listing {
        fn endpoints(&self, _: &str, _: &str, _: u16) -> Vec<EndpointInfo> {
            self.listed.fetch_add(1, Ordering::SeqCst);
            self.endpoints.lock().unwrap().clone()
        }

        fn service_by_vip(&self, _: IpAddr) -> Option<(String, String)> {
            None
        }

        fn send(
            &self,
            _: &EndpointInfo,
            _: &Caller,
            _: Request<Body>,
        ) -> crate::engine::SendFuture {
            Box::pin(async { Err(UpstreamError::Connect("not here".into())) })
        }

        fn state_version(&self) -> Option<u64> {
            Some(self.version.load(Ordering::SeqCst))
        }
    }

    fn endpoint(i: u8) -> EndpointInfo {
        EndpointInfo {
            uid: format!("w{i}"),
            address: SocketAddr::new(IpAddr::from([10, 0, 0, i]), 80),
        }
    }

    fn service_cache() -> EndpointCache {
        EndpointCache::new("ns", "svc.ns.svc.cluster.local")
    }

    #[test]
    fn lists_are_rebuilt_only_when_the_state_changes() {
        let listing = Arc::new(Listing::default());
        *listing.endpoints.lock().unwrap() = vec![endpoint(1), endpoint(2)];
        let upstream: Arc<dyn UpstreamClient> = listing.clone();
        let state = Arc::new(UpstreamState::default());
        let cache = service_cache();
        let first = cache.candidates(&upstream, &state, 80, None);
        let again = cache.candidates(&upstream, &state, 80, None);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(listing.listed.load(Ordering::SeqCst), 1);
        // Another port is another list.
        cache.candidates(&upstream, &state, 81, None);
        assert_eq!(listing.listed.load(Ordering::SeqCst), 2);

        listing.endpoints.lock().unwrap().push(endpoint(3));
        listing.version.fetch_add(1, Ordering::SeqCst);
        let changed = cache.candidates(&upstream, &state, 80, None);
        assert_eq!(changed.len(), 3);
        // The counters of an endpoint are the same across lists.
        assert!(Arc::ptr_eq(&changed[0].state, &first[0].state));

        let subset: HashSet<String> = ["w2".to_string()].into();
        let only = service_cache().candidates(&upstream, &state, 80, Some(&subset));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].info.uid, "w2");
    }

    #[tokio::test(start_paused = true)]
    async fn ejected_and_tried_endpoints_are_avoided() {
        let listing = Arc::new(Listing::default());
        *listing.endpoints.lock().unwrap() = vec![endpoint(1), endpoint(2)];
        let upstream: Arc<dyn UpstreamClient> = listing;
        let state = Arc::new(UpstreamState::default());
        let list = service_cache().candidates(&upstream, &state, 80, None);
        let lb = LoadBalancer::RoundRobin;
        let tried = [list[0].info.address];
        for _ in 0..4 {
            let c = choose(&state, lb, &list, None, &tried).unwrap();
            assert_eq!(c.info.uid, "w2");
        }
        // Every endpoint tried: any will do.
        let both = [list[0].info.address, list[1].info.address];
        assert!(choose(&state, lb, &list, None, &both).is_some());

        let spec = crate::engine::outlier::tests_support::one_error_ejects();
        state.report(&list[1], Some(&spec), Health::GatewayError);
        assert!(state.any_ejected());
        for _ in 0..4 {
            let c = choose(&state, lb, &list, Some(&spec), &[]).unwrap();
            assert_eq!(c.info.uid, "w1");
        }
        tokio::time::advance(std::time::Duration::from_secs(31)).await;
        assert!(!state.any_ejected());
        let seen: HashSet<String> = (0..4)
            .map(|_| {
                choose(&state, lb, &list, Some(&spec), &[])
                    .unwrap()
                    .info
                    .uid
                    .clone()
            })
            .collect();
        assert_eq!(seen.len(), 2);
    }
}
