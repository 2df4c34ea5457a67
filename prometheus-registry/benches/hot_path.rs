//! What the mesh's metrics cost where they are recorded, with this crate and with
//! `prometheus-client` (the Prometheus project's Rust client, which Istio's ztunnel and
//! Linkerd's proxy use), on the same machine in the same run:
//!
//! - per connection, as ztunnel counts it: the connection's label set (Istio's labels, some
//!   twenty owned strings, hashed whole) looked up when it opens (one counter) and when it
//!   closes (one counter and two byte totals);
//! - per request, as the waypoint counts it: the request's label set (shared workload and
//!   service labels with precomputed hashes) looked up, one counter and three histograms of
//!   Envoy's buckets;
//! - per scrape: rendering 1,001 request series.
//!
//! The ways to keep the values: this crate's [`Registry`] (one lookup per event, atomics), as
//! the proxies used it before (a reference count taken per lookup) and as they use it now;
//! `prometheus-client` as documented (one `Family` per metric, its `Counter` and `Histogram`);
//! and a `prometheus-client` `Family` looked up once per event holding this crate's atomics
//! (the hot path of using prometheus-client for registration and encoding only). Each is timed
//! on one thread, then on two threads recording on the same series at once, in CPU time per
//! event.
//!
//! `cargo bench -p prometheus-registry --bench hot_path`; `BENCH_OPS` sets the events per
//! thread and round (default 1,000,000; seven rounds, the median is printed), `BENCH_DUMP` a
//! folder to write both expositions to.

use std::hash::{Hash, Hasher};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram as ClientHistogram;
use prometheus_registry::{Histogram, MAX_SERIES, Registry, text};

/// Envoy's default buckets, as the waypoint's request metrics use them.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Series that exist besides the measured one, as in a busy proxy.
const OTHER_SERIES: usize = 1_000;

/// Label names of [`Connection`], in its values' order.
const CONNECTION_LABELS: [&str; 18] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "connection_security_policy",
    "response_flags",
];

/// ztunnel's connection labels: every value an owned string, the whole set hashed per lookup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Connection([String; 18]);

impl Connection {
    fn new(i: usize) -> Self {
        let values = [
            "source",
            "productpage-v1",
            "bookinfo",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
            "productpage",
            "v1",
            "Kubernetes",
            "reviews-v2",
            "bookinfo",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
            "reviews",
            "v2",
            "Kubernetes",
            "reviews.bookinfo.svc.cluster.local",
            "reviews",
            "bookinfo",
            "mutual_tls",
            "-",
        ];
        let mut labels = values.map(str::to_owned);
        // Label sets differ by source workload, as the pairs of talking workloads do.
        labels[1] = format!("productpage-{i}");
        Connection(labels)
    }

    fn pairs(&self) -> [(&'static str, &str); 18] {
        std::array::from_fn(|i| (CONNECTION_LABELS[i], self.0[i].as_str()))
    }

    fn render(&self) -> String {
        text::render_labels(&self.pairs().map(|(k, v)| (k, v, "unknown")))
    }
}

impl EncodeLabelSet for Connection {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.pairs().as_slice().encode(encoder)
    }
}

/// Labels shared by many requests and hashed once (the waypoint's workload and service labels).
#[derive(Debug, PartialEq, Eq)]
struct Shared {
    values: [String; 6],
    hash: u64,
}

impl Shared {
    fn new(values: [&str; 6]) -> Arc<Self> {
        let values = values.map(str::to_owned);
        let mut h = std::hash::DefaultHasher::new();
        values.hash(&mut h);
        Arc::new(Self {
            values,
            hash: h.finish(),
        })
    }
}

impl Hash for Shared {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Label names of one side of a request, in [`Shared`]'s order.
const SOURCE_LABELS: [&str; 6] = [
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
];
const DESTINATION_LABELS: [&str; 6] = [
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
];

/// The waypoint's request labels: three shared parts and a few small values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Request {
    source: Arc<Shared>,
    destination: Arc<Shared>,
    service: Arc<Shared>,
    code: u16,
    flags: String,
}

impl Request {
    fn new(i: usize) -> Self {
        let peer = |workload: &str, principal: &str| {
            Shared::new([
                workload,
                "bookinfo",
                principal,
                "reviews",
                "v1",
                "Kubernetes",
            ])
        };
        Request {
            source: peer(
                &format!("productpage-{i}"),
                "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
            ),
            destination: peer(
                "reviews-v1",
                "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
            ),
            service: Shared::new([
                "reviews.bookinfo.svc.cluster.local",
                "reviews",
                "bookinfo",
                "",
                "",
                "",
            ]),
            code: 200,
            flags: "-".to_owned(),
        }
    }

    /// The labels as (name, value), built at each call as the waypoint's rendering does.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("reporter", "waypoint".to_owned())];
        for (names, shared) in [
            (SOURCE_LABELS, &self.source),
            (DESTINATION_LABELS, &self.destination),
        ] {
            pairs.extend(names.into_iter().zip(shared.values.iter().cloned()));
        }
        let service = &self.service.values;
        pairs.extend([
            ("destination_service", service[0].clone()),
            ("destination_service_name", service[1].clone()),
            ("destination_service_namespace", service[2].clone()),
            ("request_protocol", "http".to_owned()),
            ("response_code", self.code.to_string()),
            ("grpc_response_status", String::new()),
            ("response_flags", self.flags.clone()),
            ("connection_security_policy", "mutual_tls".to_owned()),
        ]);
        pairs
    }

    fn render(&self) -> String {
        let pairs = self.pairs();
        let pairs: Vec<(&str, &str, &str)> = pairs
            .iter()
            .map(|(k, v)| (*k, v.as_str(), "unknown"))
            .collect();
        text::render_labels(&pairs)
    }
}

impl EncodeLabelSet for Request {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let pairs = self.pairs();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        pairs.as_slice().encode(encoder)
    }
}

/// A `Family` with the bound in front of it; an existing series is only read-locked.
/// `Family` has no `len()` outside its `test-util` feature, so the bound keeps its own count of
/// the label sets created (two first uses of one label set at once count it twice: the bound
/// errs low).
fn bounded<S, M, C>(family: &Family<S, M, C>, created: &AtomicU64, labels: &S, f: impl FnOnce(&M))
where
    S: Clone + Hash + Eq,
    C: MetricConstructor<M>,
{
    if let Some(m) = family.get(labels) {
        return f(&m);
    }
    if created.fetch_add(1, Ordering::Relaxed) >= MAX_SERIES as u64 {
        return;
    }
    f(&family.get_or_create(labels));
}

// ---- ztunnel: per connection ----

#[derive(Default)]
struct TcpCounters {
    opened: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// This crate: one map of label set → four atomics, looked up at open and at close, the
/// series updated under the map's read lock.
fn tcp_registry() -> impl Fn(&Connection) + Sync {
    let registry = tcp_series();
    move |labels| {
        registry.with(labels, Connection::render, |c| {
            c.opened.fetch_add(1, Ordering::Relaxed);
        });
        registry.with(labels, Connection::render, |c| {
            c.closed.fetch_add(1, Ordering::Relaxed);
            c.received.fetch_add(100, Ordering::Relaxed);
            c.sent.fetch_add(2000, Ordering::Relaxed);
        });
    }
}

/// The same map used as the proxies used it before: each lookup takes a reference to the
/// series (an `Arc` increment and decrement).
fn tcp_registry_arc() -> impl Fn(&Connection) + Sync {
    let registry = tcp_series();
    move |labels| {
        if let Some(s) = registry.get(labels, Connection::render) {
            s.values.opened.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = registry.get(labels, Connection::render) {
            s.values.closed.fetch_add(1, Ordering::Relaxed);
            s.values.received.fetch_add(100, Ordering::Relaxed);
            s.values.sent.fetch_add(2000, Ordering::Relaxed);
        }
    }
}

fn tcp_series() -> Registry<Connection, TcpCounters> {
    let registry = Registry::default();
    for i in 0..OTHER_SERIES {
        registry.get(&Connection::new(i + 1), Connection::render);
    }
    registry
}

/// prometheus-client as documented: a `Family` of `Counter`s per metric.
fn tcp_prometheus_client() -> impl Fn(&Connection) + Sync {
    let families: [Family<Connection, Counter>; 4] = Default::default();
    let created = AtomicU64::new(0);
    for i in 0..OTHER_SERIES {
        for f in &families {
            drop(f.get_or_create(&Connection::new(i + 1)));
        }
    }
    move |labels| {
        let [opened, closed, sent, received] = &families;
        bounded(opened, &created, labels, |c| {
            c.inc();
        });
        bounded(closed, &created, labels, |c| {
            c.inc();
        });
        bounded(received, &created, labels, |c| {
            c.inc_by(100);
        });
        bounded(sent, &created, labels, |c| {
            c.inc_by(2000);
        });
    }
}

/// prometheus-client's `Family` as the map, holding this crate's atomics.
fn tcp_family_of_atomics() -> impl Fn(&Connection) + Sync {
    let family: Family<Connection, TcpCounters> = Family::default();
    let created = AtomicU64::new(0);
    for i in 0..OTHER_SERIES {
        drop(family.get_or_create(&Connection::new(i + 1)));
    }
    move |labels| {
        bounded(&family, &created, labels, |c| {
            c.opened.fetch_add(1, Ordering::Relaxed);
        });
        bounded(&family, &created, labels, |c| {
            c.closed.fetch_add(1, Ordering::Relaxed);
            c.received.fetch_add(100, Ordering::Relaxed);
            c.sent.fetch_add(2000, Ordering::Relaxed);
        });
    }
}

// ---- waypoint: per request ----

struct RequestSeries {
    requests: AtomicU64,
    duration: Histogram<19>,
    request_bytes: Histogram<19>,
    response_bytes: Histogram<19>,
}

impl Default for RequestSeries {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            duration: Histogram::new(&BUCKETS, 1000.0),
            request_bytes: Histogram::new(&BUCKETS, 1000.0),
            response_bytes: Histogram::new(&BUCKETS, 1000.0),
        }
    }
}

impl RequestSeries {
    fn record(&self, ms: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.duration.observe(ms);
        self.request_bytes.observe(0.0);
        self.response_bytes.observe(512.0);
    }
}

type Record = Box<dyn Fn(&Request, f64) + Sync>;
type Render = Box<dyn Fn() -> String>;

/// This crate: one lookup, then atomics under the map's read lock; label sets rendered when
/// their series is created.
fn http_registry() -> (Record, Render) {
    let registry = http_series();
    let scraped = registry.clone();
    let record = move |labels: &Request, ms: f64| {
        registry.with(labels, Request::render, |s| s.record(ms));
    };
    let render = move || {
        let series = scraped.sorted();
        let mut out = String::new();
        text::family(&mut out, "istio_requests_total", "Requests.", "counter");
        prometheus_registry::samples(&mut out, "istio_requests_total", &series, |s| {
            s.requests.load(Ordering::Relaxed)
        });
        type Pick = fn(&RequestSeries) -> &Histogram<19>;
        let histograms: [(&str, Pick); 3] = [
            ("istio_request_duration_milliseconds", |s| &s.duration),
            ("istio_request_bytes", |s| &s.request_bytes),
            ("istio_response_bytes", |s| &s.response_bytes),
        ];
        for (name, pick) in histograms {
            text::family(&mut out, name, "Sizes.", "histogram");
            for s in &series {
                pick(&s.values).render(&mut out, name, &s.labels);
            }
        }
        out
    };
    (Box::new(record), Box::new(render))
}

/// The same map used as the waypoint used it before: a reference to the series per lookup.
fn http_registry_arc() -> Record {
    let registry = http_series();
    Box::new(move |labels: &Request, ms: f64| {
        if let Some(s) = registry.get(labels, Request::render) {
            s.values.record(ms);
        }
    })
}

fn http_series() -> Arc<Registry<Request, RequestSeries>> {
    let registry: Arc<Registry<Request, RequestSeries>> = Arc::new(Registry::default());
    for i in 0..OTHER_SERIES {
        registry.with(&Request::new(i + 1), Request::render, |s| {
            s.record(i as f64)
        });
    }
    registry
}

/// prometheus-client as documented: a counter family and three histogram families, registered
/// in its registry and encoded by its text encoder.
fn http_prometheus_client() -> (Record, Render) {
    type Histograms = Family<Request, ClientHistogram, fn() -> ClientHistogram>;
    let requests: Family<Request, Counter> = Family::default();
    let new: fn() -> ClientHistogram = || ClientHistogram::new(BUCKETS);
    let histograms: [Histograms; 3] = std::array::from_fn(|_| Family::new_with_constructor(new));
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("istio_requests", "Requests", requests.clone());
    let names = [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ];
    for (name, h) in names.into_iter().zip(&histograms) {
        registry.register(name, "Sizes", h.clone());
    }
    let created = AtomicU64::new(0);
    let record = move |labels: &Request, ms: f64| {
        bounded(&requests, &created, labels, |c| {
            c.inc();
        });
        for (h, v) in histograms.iter().zip([ms, 0.0, 512.0]) {
            bounded(h, &created, labels, |h| h.observe(v));
        }
    };
    for i in 0..OTHER_SERIES {
        record(&Request::new(i + 1), i as f64);
    }
    let render = move || {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("a String takes any text");
        out
    };
    (Box::new(record), Box::new(render))
}

/// prometheus-client's `Family` as the map, holding this crate's atomics.
fn http_family_of_atomics() -> Record {
    let family: Family<Request, RequestSeries> = Family::default();
    let created = AtomicU64::new(0);
    for i in 0..OTHER_SERIES {
        drop(family.get_or_create(&Request::new(i + 1)));
    }
    Box::new(move |labels, ms| bounded(&family, &created, labels, |s| s.record(ms)))
}

// ---- timing ----

/// Rounds per variant; the median is printed.
const ROUNDS: usize = 7;

type Event<'a> = Box<dyn Fn(usize) + Sync + 'a>;

/// CPU time this thread has used, in nanoseconds. CPU time rather than wall time: on a
/// machine shared with other work, time spent preempted is not the event's cost.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU time per event while each of `threads` threads records `ops` events at once.
fn round(threads: usize, ops: usize, event: &(dyn Fn(usize) + Sync)) -> f64 {
    let cpu: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let started = thread_cpu_ns();
                    for i in 0..ops {
                        event(black_box(i));
                    }
                    thread_cpu_ns() - started
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a benchmark thread panicked"))
            .sum()
    });
    cpu as f64 / (threads * ops) as f64
}

/// Times every variant on one and on two threads, the variants taking turns round after
/// round so that a change in the machine's load falls on all of them alike.
fn measure(variants: &[(&str, Event<'_>)], ops: usize) {
    for (_, event) in variants {
        for i in 0..ops / 10 {
            event(i);
        }
    }
    let mut samples = vec![[Vec::new(), Vec::new()]; variants.len()];
    for _ in 0..ROUNDS {
        for (samples, (_, event)) in samples.iter_mut().zip(variants) {
            for (threads, samples) in [1, 2].into_iter().zip(samples.iter_mut()) {
                samples.push(round(threads, ops, event.as_ref()));
            }
        }
    }
    for ((name, _), samples) in variants.iter().zip(&mut samples) {
        let [one, two] = samples.each_mut().map(|s| {
            s.sort_by(f64::total_cmp);
            s[ROUNDS / 2]
        });
        println!("{name:<48} {one:>10.1} {two:>10.1}");
    }
}

fn main() {
    let ops: usize = std::env::var("BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "ns of CPU per event, median of {ROUNDS} rounds of {ops} events per thread \
         (2 threads: on the same series at once)"
    );
    println!("{:<48} {:>10} {:>10}", "", "1 thread", "2 threads");

    let connection = &Connection::new(0);
    let tcp = |record: Box<dyn Fn(&Connection) + Sync>| -> Event<'_> {
        Box::new(move |_| record(black_box(connection)))
    };
    measure(
        &[
            (
                "connection: prometheus-registry, Arc per lookup",
                tcp(Box::new(tcp_registry_arc())),
            ),
            (
                "connection: prometheus-registry",
                tcp(Box::new(tcp_registry())),
            ),
            (
                "connection: prometheus-client",
                tcp(Box::new(tcp_prometheus_client())),
            ),
            (
                "connection: prometheus-client Family + atomics",
                tcp(Box::new(tcp_family_of_atomics())),
            ),
        ],
        ops,
    );

    let request = &Request::new(0);
    // Durations spread over the buckets, as real ones are.
    let http = |record: Record| -> Event<'_> {
        Box::new(move |i| record(black_box(request), (i % 2000) as f64 * 0.37))
    };
    let (registry, registry_render) = http_registry();
    let (client, client_render) = http_prometheus_client();
    measure(
        &[
            (
                "request: prometheus-registry, Arc per lookup",
                http(http_registry_arc()),
            ),
            ("request: prometheus-registry", http(registry)),
            ("request: prometheus-client", http(client)),
            (
                "request: prometheus-client Family + atomics",
                http(http_family_of_atomics()),
            ),
        ],
        ops,
    );

    for (name, render) in [
        ("prometheus-registry", registry_render),
        ("prometheus-client", client_render),
    ] {
        let rendered = render();
        if let Ok(dir) = std::env::var("BENCH_DUMP") {
            // To compare the two expositions line by line.
            std::fs::write(format!("{dir}/{name}.txt"), &rendered).expect("BENCH_DUMP is writable");
        }
        let bytes = rendered.len();
        let scrapes = 20;
        let started = Instant::now();
        for _ in 0..scrapes {
            black_box(render());
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(scrapes);
        println!(
            "scrape of {} request series, {name:<20} {ms:>8.2} ms, {bytes} bytes",
            OTHER_SERIES + 1
        );
    }
}
