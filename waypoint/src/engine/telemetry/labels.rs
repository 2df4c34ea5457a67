//! The label values of the request metrics, built once and shared: a workload's labels once
//! per workload (and mesh state version), a service's once per config. A request then holds
//! three reference-counted pointers instead of some twenty strings, and its label set hashes
//! from their precomputed hashes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_registry::text;
use proxy_core::telemetry::Reporter;

use super::overrides::{FamilyOverride, MetricOverrides};
use crate::engine::upstream::{StateStamp, UpstreamClient, WorkloadMeta, state_stamp};

/// Most workloads whose labels are kept; past it the cache starts over, so a caller cycling
/// through addresses cannot grow it.
const MAX_PEERS: usize = 4096;

/// One side's workload labels (Istio's `source_*` or `destination_*`), with the hash of all
/// of them computed once.
#[derive(Debug)]
pub(crate) struct PeerLabels {
    /// `*_workload`.
    pub workload: Box<str>,
    /// `*_workload_namespace`.
    pub namespace: Box<str>,
    /// `*_principal`: the SPIFFE ID.
    pub principal: Box<str>,
    /// `*_app` and `*_canonical_service`.
    pub app: Box<str>,
    /// `*_version` and `*_canonical_revision`.
    pub version: Box<str>,
    /// `*_cluster`.
    pub cluster: Box<str>,
    hash: u64,
}

impl PeerLabels {
    /// Labels of a workload known by `meta` (every label "unknown" without one) with
    /// `principal` as its identity.
    pub(crate) fn new(meta: Option<&WorkloadMeta>, principal: String) -> Self {
        let field = |pick: fn(&WorkloadMeta) -> &String| -> Box<str> {
            meta.map_or_else(Box::default, |m| pick(m).as_str().into())
        };
        let mut labels = Self {
            workload: field(|m| &m.workload),
            namespace: field(|m| &m.namespace),
            principal: principal.into_boxed_str(),
            app: field(|m| &m.canonical_service),
            version: field(|m| &m.canonical_revision),
            cluster: field(|m| &m.cluster),
            hash: 0,
        };
        labels.hash = hash_of(&labels.fields());
        labels
    }

    /// The principal as authorization policies name it: the SPIFFE ID without its scheme
    /// (`cluster.local/ns/shop/sa/web`); `None` without an identity.
    pub(crate) fn policy_principal(&self) -> Option<&str> {
        (!self.principal.is_empty()).then(|| {
            self.principal
                .strip_prefix("spiffe://")
                .unwrap_or(&self.principal)
        })
    }

    /// Labels of a workload nothing is known about, shared.
    pub(crate) fn unknown() -> Arc<Self> {
        static UNKNOWN: OnceLock<Arc<PeerLabels>> = OnceLock::new();
        UNKNOWN
            .get_or_init(|| Arc::new(PeerLabels::new(None, String::new())))
            .clone()
    }

    fn fields(&self) -> [&str; 6] {
        [
            &self.workload,
            &self.namespace,
            &self.principal,
            &self.app,
            &self.version,
            &self.cluster,
        ]
    }
}

impl Hash for PeerLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for PeerLabels {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || (self.hash == other.hash && self.fields() == other.fields())
    }
}

impl Eq for PeerLabels {}

/// The destination service's labels, built when the config is compiled.
#[derive(Debug)]
pub(crate) struct ServiceLabels {
    /// `destination_service`: the hostname.
    pub hostname: Box<str>,
    /// `destination_service_name`.
    pub name: Box<str>,
    /// `destination_service_namespace`.
    pub namespace: Box<str>,
    hash: u64,
}

impl ServiceLabels {
    /// The labels of service `name` (`hostname`) in `namespace`.
    pub(crate) fn new(hostname: &str, name: &str, namespace: &str) -> Self {
        Self {
            hostname: hostname.into(),
            name: name.into(),
            namespace: namespace.into(),
            hash: hash_of(&[hostname, name, namespace]),
        }
    }

    /// No service (the request matched none), shared.
    pub(crate) fn unknown() -> Arc<Self> {
        static UNKNOWN: OnceLock<Arc<ServiceLabels>> = OnceLock::new();
        UNKNOWN
            .get_or_init(|| Arc::new(ServiceLabels::new("", "", "")))
            .clone()
    }

    fn fields(&self) -> [&str; 3] {
        [&self.hostname, &self.name, &self.namespace]
    }
}

impl Hash for ServiceLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for ServiceLabels {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || (self.hash == other.hash && self.fields() == other.fields())
    }
}

impl Eq for ServiceLabels {}

fn hash_of(fields: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    fields.hash(&mut h);
    h.finish()
}

/// Istio's labels of the request metrics (`reporter` is always "waypoint" and
/// `connection_security_policy` "mutual_tls": every request arrives over HBONE). Empty values
/// render as "unknown"; the canonical service and revision repeat app and version.
#[derive(Clone, Debug)]
pub(crate) struct RequestLabels {
    /// `source_*`.
    pub source: Arc<PeerLabels>,
    /// `destination_*` of the workload.
    pub destination: Arc<PeerLabels>,
    /// `destination_service*`.
    pub service: Arc<ServiceLabels>,
    /// "http" or "grpc".
    pub request_protocol: &'static str,
    /// `response_code`.
    pub response_code: u16,
    /// `grpc_response_status`; empty when not gRPC.
    pub grpc_response_status: Cow<'static, str>,
    /// Envoy response flags, "-" when none.
    pub response_flags: String,
    /// The service's metric overrides (compared by identity: one per compiled service).
    pub overrides: Option<Arc<MetricOverrides>>,
}

impl PartialEq for RequestLabels {
    /// Field by field, cheapest first; the workload and service labels compare by pointer
    /// before content, and empty strings without a call to `memcmp`.
    fn eq(&self, other: &Self) -> bool {
        fn same(a: &str, b: &str) -> bool {
            a.len() == b.len() && (a.is_empty() || a == b)
        }
        self.response_code == other.response_code
            && same(self.request_protocol, other.request_protocol)
            && same(&self.response_flags, &other.response_flags)
            && same(&self.grpc_response_status, &other.grpc_response_status)
            && self.service == other.service
            && self.source == other.source
            && self.destination == other.destination
            && match (&self.overrides, &other.overrides) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for RequestLabels {}

impl Hash for RequestLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
        self.destination.hash(state);
        self.service.hash(state);
        self.request_protocol.hash(state);
        self.response_code.hash(state);
        self.grpc_response_status.hash(state);
        self.response_flags.hash(state);
        self.overrides.as_ref().map(Arc::as_ptr).hash(state);
    }
}

impl Default for RequestLabels {
    fn default() -> Self {
        Self {
            source: PeerLabels::unknown(),
            destination: PeerLabels::unknown(),
            service: ServiceLabels::unknown(),
            request_protocol: "http",
            response_code: 0,
            grpc_response_status: Cow::Borrowed(""),
            response_flags: String::new(),
            overrides: None,
        }
    }
}

/// A `grpc-status` value; the standard codes without an allocation.
pub(crate) fn grpc_status(value: &str) -> Cow<'static, str> {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    match CODES.iter().find(|c| **c == value) {
        Some(code) => Cow::Borrowed(code),
        None => Cow::Owned(value.to_owned()),
    }
}

/// Renders a label set in Istio's label order.
pub(crate) fn render(l: &RequestLabels) -> String {
    let code = l.response_code.to_string();
    text::render_labels(&pairs(l, &code))
}

/// Renders a label set with a metric's overrides applied.
pub(crate) fn render_overridden(l: &RequestLabels, o: &FamilyOverride) -> String {
    let code = l.response_code.to_string();
    text::render_labels(&o.relabel(&pairs(l, &code)))
}

/// The `(name, value, default)` label pairs of a label set, in Istio's order.
fn pairs<'a>(l: &'a RequestLabels, code: &'a str) -> [(&'static str, &'a str, &'static str); 25] {
    let reporter = Reporter::Waypoint.as_str();
    let (s, d, svc) = (&l.source, &l.destination, &l.service);
    [
        ("reporter", reporter, reporter),
        ("source_workload", &s.workload, "unknown"),
        ("source_canonical_service", &s.app, "unknown"),
        ("source_canonical_revision", &s.version, "latest"),
        ("source_workload_namespace", &s.namespace, "unknown"),
        ("source_principal", &s.principal, "unknown"),
        ("source_app", &s.app, "unknown"),
        ("source_version", &s.version, "unknown"),
        ("source_cluster", &s.cluster, "unknown"),
        ("destination_workload", &d.workload, "unknown"),
        ("destination_workload_namespace", &d.namespace, "unknown"),
        ("destination_principal", &d.principal, "unknown"),
        ("destination_app", &d.app, "unknown"),
        ("destination_version", &d.version, "unknown"),
        ("destination_service", &svc.hostname, "unknown"),
        ("destination_canonical_service", &d.app, "unknown"),
        ("destination_canonical_revision", &d.version, "latest"),
        ("destination_service_name", &svc.name, "unknown"),
        ("destination_service_namespace", &svc.namespace, "unknown"),
        ("destination_cluster", &d.cluster, "unknown"),
        ("request_protocol", l.request_protocol, "http"),
        ("response_code", code, "0"),
        ("grpc_response_status", &l.grpc_response_status, ""),
        ("response_flags", &l.response_flags, "-"),
        ("connection_security_policy", "mutual_tls", "mutual_tls"),
    ]
}

/// Workload labels already built, valid while the upstream's state stays the same.
#[derive(Default)]
pub(crate) struct Peers {
    inner: Mutex<PeerMaps>,
}

/// Labels by IP, with the caller identity their principal was built from (`None` for
/// endpoints, whose principal is their workload's own).
type PeerMap = HashMap<IpAddr, (Option<hbone::Identity>, Arc<PeerLabels>)>;

#[derive(Default)]
struct PeerMaps {
    /// The upstream state the entries came from.
    stamp: Option<StateStamp>,
    /// Callers.
    sources: PeerMap,
    /// Endpoints.
    destinations: PeerMap,
}

impl PeerMaps {
    /// Starts over when the entries came from another upstream state (`stamp` `None`:
    /// nothing may be kept).
    fn check(&mut self, stamp: Option<StateStamp>) -> bool {
        if self.stamp != stamp {
            self.sources.clear();
            self.destinations.clear();
            self.stamp = stamp;
        }
        stamp.is_some()
    }

    fn side(&mut self, peer: Peer<'_>) -> &mut PeerMap {
        match peer {
            Peer::Caller(_) => &mut self.sources,
            Peer::Endpoint => &mut self.destinations,
        }
    }
}

/// Which side of a request a workload is on.
#[derive(Clone, Copy)]
enum Peer<'a> {
    /// The caller, proving this identity (its principal label).
    Caller(Option<&'a hbone::Identity>),
    /// An endpoint: its principal is its workload's identity.
    Endpoint,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, PeerMaps> {
        // Each update is a single insert: a panic elsewhere leaves the maps usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `source_*` labels of a caller at `ip` proving `identity`.
    pub(crate) fn source(
        &self,
        upstream: &Arc<dyn UpstreamClient>,
        ip: IpAddr,
        identity: Option<&hbone::Identity>,
    ) -> Arc<PeerLabels> {
        self.labels(upstream, ip, Peer::Caller(identity))
    }

    /// The `destination_*` labels of the endpoint at `ip`.
    pub(crate) fn destination(
        &self,
        upstream: &Arc<dyn UpstreamClient>,
        ip: IpAddr,
    ) -> Arc<PeerLabels> {
        self.labels(upstream, ip, Peer::Endpoint)
    }

    fn labels(
        &self,
        upstream: &Arc<dyn UpstreamClient>,
        ip: IpAddr,
        peer: Peer<'_>,
    ) -> Arc<PeerLabels> {
        let stamp = state_stamp(upstream);
        let identity = match peer {
            Peer::Caller(identity) => identity,
            Peer::Endpoint => None,
        };
        {
            let mut maps = self.lock();
            if maps.check(stamp)
                && let Some((id, labels)) = maps.side(peer).get(&ip)
                && id.as_ref() == identity
            {
                return labels.clone();
            }
        }
        let meta = upstream.workload(ip);
        let principal = match peer {
            Peer::Caller(identity) => identity,
            Peer::Endpoint => meta.as_ref().and_then(|m| m.identity.as_ref()),
        };
        let principal = principal.map(ToString::to_string).unwrap_or_default();
        let labels = Arc::new(PeerLabels::new(meta.as_ref(), principal));
        let mut maps = self.lock();
        if maps.check(stamp) {
            let map = maps.side(peer);
            if map.len() >= MAX_PEERS {
                map.clear();
            }
            map.insert(ip, (identity.cloned(), labels.clone()));
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;
    use crate::engine::{Body, Caller, EndpointInfo, SendFuture, UpstreamError};

    /// Workloads whose state version the test bumps, counting the lookups.
    #[derive(Default)]
    struct Workloads {
        version: AtomicU64,
        looked_up: AtomicUsize,
    }

    impl UpstreamClient for Workloads {
        fn endpoints(&self, _: &str, _: &str, _: u16) -> Vec<EndpointInfo> {
            Vec::new()
        }

        fn service_by_vip(&self, _: IpAddr) -> Option<(String, String)> {
            None
        }

        fn send(&self, _: &EndpointInfo, _: &Caller, _: http::Request<Body>) -> SendFuture {
            Box::pin(async { Err(UpstreamError::Connect("not here".into())) })
        }

        fn state_version(&self) -> Option<u64> {
            Some(self.version.load(Ordering::SeqCst))
        }

        fn workload(&self, ip: IpAddr) -> Option<WorkloadMeta> {
            self.looked_up.fetch_add(1, Ordering::SeqCst);
            Some(WorkloadMeta {
                workload: format!("w-{ip}"),
                identity: Some("spiffe://cluster.local/ns/shop/sa/reviews".parse().unwrap()),
                ..Default::default()
            })
        }
    }

    #[test]
    fn peer_labels_are_kept_per_state_and_caller_identity() {
        let workloads = Arc::new(Workloads::default());
        let upstream: Arc<dyn UpstreamClient> = workloads.clone();
        let looked_up = || workloads.looked_up.load(Ordering::SeqCst);
        let peers = Peers::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let web: hbone::Identity = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();

        let caller = peers.source(&upstream, ip, Some(&web));
        assert_eq!(&*caller.workload, "w-10.0.0.1");
        assert_eq!(&*caller.principal, "spiffe://cluster.local/ns/shop/sa/web");
        assert!(Arc::ptr_eq(
            &caller,
            &peers.source(&upstream, ip, Some(&web))
        ));
        assert_eq!(looked_up(), 1);
        // Another caller at that address is named by what it proves, not by the last one.
        assert_eq!(&*peers.source(&upstream, ip, None).principal, "");
        assert_eq!(looked_up(), 2);

        // An endpoint's principal is its workload's own identity.
        let endpoint = peers.destination(&upstream, ip);
        assert_eq!(
            &*endpoint.principal,
            "spiffe://cluster.local/ns/shop/sa/reviews"
        );
        assert!(Arc::ptr_eq(&endpoint, &peers.destination(&upstream, ip)));
        assert_eq!(looked_up(), 3);

        // A new mesh state: everything is looked up again.
        workloads.version.fetch_add(1, Ordering::SeqCst);
        assert!(!Arc::ptr_eq(&endpoint, &peers.destination(&upstream, ip)));
        assert_eq!(looked_up(), 4);
        peers.source(&upstream, ip, Some(&web));
        assert_eq!(looked_up(), 5);
    }

    #[test]
    fn labels_escape_and_default() {
        let r = render(&RequestLabels {
            service: Arc::new(ServiceLabels::new("a\"b", "", "")),
            ..Default::default()
        });
        assert!(r.contains("destination_service=\"a\\\"b\""));
        assert!(r.contains("source_workload=\"unknown\""));
        assert!(r.contains("response_flags=\"-\""));
    }

    #[test]
    fn equal_labels_built_apart_are_one_label_set() {
        let meta = WorkloadMeta {
            workload: "reviews-v1".into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        let a = Arc::new(PeerLabels::new(
            Some(&meta),
            "spiffe://x/ns/shop/sa/r".into(),
        ));
        let b = Arc::new(PeerLabels::new(
            Some(&meta),
            "spiffe://x/ns/shop/sa/r".into(),
        ));
        let other = Arc::new(PeerLabels::new(Some(&meta), String::new()));
        assert_eq!(a, b);
        assert_ne!(a, other);
        let labels = |source: &Arc<PeerLabels>| RequestLabels {
            source: source.clone(),
            ..Default::default()
        };
        let mut set = std::collections::HashSet::new();
        set.insert(labels(&a));
        assert!(set.contains(&labels(&b)));
        assert!(!set.contains(&labels(&other)));
        // Policies see the caller's principal as they always did.
        let id: hbone::Identity = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
        let caller = PeerLabels::new(None, id.to_string());
        assert_eq!(
            caller.policy_principal(),
            Some(crate::engine::authz::principal(&id).as_str())
        );
        assert_eq!(PeerLabels::unknown().policy_principal(), None);
        assert_eq!(grpc_status("14"), "14");
        assert!(matches!(grpc_status("14"), Cow::Borrowed(_)));
        assert_eq!(grpc_status("99"), "99");
    }
}
