//! State that outlives config versions: per-service endpoint counters and outlier state,
//! connection pools, retry budgets and rate-limit buckets, and the request metrics.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::balance::{Candidate, EndpointState};
use super::outlier::{self, Health, OutlierSpec, OutlierState};
use super::pool::{PoolSpec, PoolState};
use super::ratelimit::{Bucket, RateLimitSpec};
use super::retry::{Budget, BudgetSpec};
use super::telemetry::{Peers, RequestMetrics};
use super::upstream::EndpointInfo;
use super::workload_limits::LimitBuckets;

/// Mirrored requests in flight at once; beyond this, copies are skipped so that a slow mirror
/// target can never hold the waypoint's memory.
pub(crate) const MAX_MIRRORS_IN_FLIGHT: usize = 256;

/// Endpoint entries kept beyond the current endpoint list before stale ones are pruned.
const ENDPOINT_SLACK: usize = 16;

/// State that outlives config updates: request metrics, endpoint health (outlier detection),
/// connection-pool and least-request counters, rate-limit buckets, retry budgets.
pub struct Runtime {
    pub(crate) metrics: Arc<RequestMetrics>,
    /// Workload labels of callers and endpoints, built once per mesh state version.
    pub(crate) peers: Peers,
    upstreams: RwLock<HashMap<String, Arc<UpstreamState>>>,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
    /// The buckets of the workload rate limits.
    pub(crate) limit_buckets: LimitBuckets,
    /// The outlier detection settings of each service in the config last compiled.
    outliers: Mutex<HashMap<String, HashSet<OutlierSpec>>>,
    pub(crate) mirrors: Arc<Semaphore>,
    /// The waypoint's own SPIFFE URI (`By=` of `x-forwarded-client-cert`), once known.
    own_identity: OnceLock<String>,
    /// The waypoint's xDS node id (`router~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`), the
    /// `node_id` of its spans, once known.
    node_id: OnceLock<Arc<str>>,
}

impl Runtime {
    /// Fresh state.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            metrics: Arc::new(RequestMetrics::default()),
            peers: Peers::default(),
            upstreams: RwLock::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            limit_buckets: LimitBuckets::default(),
            outliers: Mutex::new(HashMap::new()),
            mirrors: Arc::new(Semaphore::new(MAX_MIRRORS_IN_FLIGHT)),
            own_identity: OnceLock::new(),
            node_id: OnceLock::new(),
        })
    }

    /// Records the identity the waypoint runs as, which `x-forwarded-client-cert` names as
    /// `By=`. A waypoint has one identity for its life: later calls change nothing.
    pub fn set_own_identity(&self, identity: &hbone::Identity) {
        let _ = self.own_identity.set(identity.to_string());
    }

    /// Records the node id the waypoint gives the controller; later calls change nothing.
    pub fn set_node_id(&self, node_id: &str) {
        let _ = self.node_id.set(node_id.into());
    }

    /// The waypoint's node id, when set.
    pub(crate) fn node_id(&self) -> Option<&Arc<str>> {
        self.node_id.get()
    }

    /// The waypoint's own SPIFFE URI, when set.
    pub(crate) fn own_identity(&self) -> Option<&str> {
        self.own_identity.get().map(String::as_str)
    }

    /// Prometheus text of the request metrics (`istio_requests_total`,
    /// `istio_request_duration_milliseconds`, `istio_request_bytes`, `istio_response_bytes`).
    pub fn render_metrics(&self) -> String {
        self.metrics.render()
    }

    /// The live requests `meshctl tap` listens to.
    pub fn tap(&self) -> Arc<proxy_core::tap::Tap> {
        self.metrics.tap.clone()
    }

    /// The state of upstream service `hostname`, created on first use.
    pub(crate) fn upstream(&self, hostname: &str) -> Arc<UpstreamState> {
        if let Some(u) = self
            .upstreams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hostname)
        {
            return u.clone();
        }
        self.upstreams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(hostname.to_string())
            .or_default()
            .clone()
    }

    /// The token bucket of service `hostname`, replaced when its limit changes.
    pub(crate) fn bucket(&self, hostname: &str, spec: RateLimitSpec) -> Arc<Bucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(hostname) {
            Some(b) if b.spec() == spec => b.clone(),
            _ => {
                let b = Arc::new(Bucket::new(spec));
                buckets.insert(hostname.to_string(), b.clone());
                b
            }
        }
    }

    /// Drops the state of services a new config no longer mentions.
    pub(crate) fn retain(&self, hostnames: &HashSet<&str>) {
        self.upstreams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|h, _| hostnames.contains(h.as_str()));
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|h, _| hostnames.contains(h.as_str()));
    }

    /// Takes the outlier detection settings of a new config. A service whose settings were
    /// removed or changed forgets its endpoints' ejections and error streaks, as Envoy
    /// rebuilds a cluster whose outlier detection changed: an endpoint ejected under the old
    /// settings is back in rotation at once.
    pub(crate) fn outlier_detection(&self, specs: HashMap<&str, HashSet<OutlierSpec>>) {
        let mut known = self.outliers.lock().unwrap_or_else(|e| e.into_inner());
        let none = HashSet::new();
        for (host, state) in self
            .upstreams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let before = known.get(host).unwrap_or(&none);
            let after = specs.get(host.as_str()).unwrap_or(&none);
            if before != after {
                state.forget_outliers(host);
            }
        }
        *known = specs
            .into_iter()
            .map(|(host, s)| (host.to_string(), s))
            .collect();
    }
}

/// What the waypoint keeps about one upstream service.
#[derive(Default)]
pub(crate) struct UpstreamState {
    endpoints: RwLock<HashMap<SocketAddr, Arc<EndpointState>>>,
    /// Endpoints last listed, for the ejection percentage.
    listed: AtomicUsize,
    /// Round-robin position.
    pub round_robin: AtomicUsize,
    pools: Mutex<HashMap<String, Arc<PoolState>>>,
    budget: Mutex<Option<Arc<Budget>>>,
    /// When the last ejection so far ends: before then some endpoint may be ejected, after
    /// it none is, and choosing needs no look at each endpoint.
    ejections_end: Mutex<Option<Instant>>,
}

impl UpstreamState {
    fn endpoint(&self, address: SocketAddr) -> Arc<EndpointState> {
        if let Some(e) = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&address)
        {
            return e.clone();
        }
        self.endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(address)
            .or_default()
            .clone()
    }

    /// The endpoints of `listed` in the subset (when given), each with its counters.
    pub(crate) fn candidates(
        &self,
        listed: Vec<EndpointInfo>,
        subset: Option<&HashSet<String>>,
    ) -> Vec<Candidate> {
        self.listed.store(listed.len(), Ordering::Relaxed);
        self.prune(&listed);
        listed
            .into_iter()
            .filter(|e| subset.is_none_or(|s| s.contains(&e.uid)))
            .map(|info| Candidate {
                state: self.endpoint(info.address),
                info: Arc::new(info),
            })
            .collect()
    }

    /// Whether some endpoint of the service may be ejected now.
    pub(crate) fn any_ejected(&self) -> bool {
        // Most services never eject: no clock read for them.
        self.ejections_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|end| Instant::now() < end)
    }

    /// Forgets endpoints no longer listed, once enough have gone to be worth a pass.
    fn prune(&self, listed: &[EndpointInfo]) {
        let len = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if len <= listed.len() + ENDPOINT_SLACK {
            return;
        }
        let keep: HashSet<SocketAddr> = listed.iter().map(|e| e.address).collect();
        let now = Instant::now();
        self.endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|a, s| {
                keep.contains(a) || s.in_flight() > 0 || s.outlier().is_ejected(None, now)
            });
    }

    /// Records how an exchange with `endpoint` went and ejects it when it trips `spec`
    /// within the ejection percentage.
    pub(crate) fn report(&self, endpoint: &Candidate, spec: Option<&OutlierSpec>, health: Health) {
        let Some(spec) = spec else {
            return;
        };
        let now = Instant::now();
        let tripped = {
            let mut state = endpoint.state.outlier();
            // Ends an ejection that has run its time and decays the multiplier first, as
            // choosing the endpoint would have when it looked at every endpoint.
            state.is_ejected(Some(spec), now);
            state.record(spec, health)
        };
        if !tripped {
            return;
        }
        let ejected = self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| !Arc::ptr_eq(s, &endpoint.state) && s.outlier().is_ejected(Some(spec), now))
            .count();
        let total = self.listed.load(Ordering::Relaxed).max(1);
        let mut state = endpoint.state.outlier();
        if outlier::may_eject(spec, ejected, total) {
            let until = state.eject(spec, now);
            let mut end = self.ejections_end.lock().unwrap_or_else(|e| e.into_inner());
            *end = Some(end.map_or(until, |e| e.max(until)));
            tracing::info!(endpoint = %endpoint.info.address, uid = %endpoint.info.uid, "outlier ejected");
        } else {
            state.reset_streak();
        }
    }

    /// Ends every ejection and error streak of the service's endpoints (`host`, for the log).
    fn forget_outliers(&self, host: &str) {
        let mut lifted = 0;
        for e in self
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let mut state = e.outlier();
            lifted += usize::from(state.is_ejected(None, Instant::now()));
            *state = OutlierState::default();
        }
        *self.ejections_end.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if lifted > 0 {
            tracing::info!(
                service = host,
                lifted,
                "outlier detection changed: ejections lifted"
            );
        }
    }

    /// The connection pool of `subset` ("" for the whole service), replaced when its limits
    /// change.
    pub(crate) fn pool(&self, subset: &str, spec: PoolSpec) -> Arc<PoolState> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        match pools.get(subset) {
            Some(p) if p.spec() == spec => p.clone(),
            _ => {
                let p = PoolState::new(spec);
                pools.insert(subset.to_string(), p.clone());
                p
            }
        }
    }

    /// The retry budget, replaced when its settings change.
    pub(crate) fn budget(&self, spec: BudgetSpec) -> Arc<Budget> {
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        match &*budget {
            Some(b) if b.spec() == spec => b.clone(),
            _ => {
                let b = Arc::new(Budget::new(spec));
                *budget = Some(b.clone());
                b
            }
        }
    }
}
