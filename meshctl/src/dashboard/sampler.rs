//! The dashboard's view of the mesh, refreshed by one thread: every refresh it finds the
//! proxies and rows under the sandbox's lock (as `stat` does), runs `check`, scrapes every
//! proxy's `/metrics` once and measures `stat`'s and `edges`' figures between the newest
//! scrape and the one a window before it, reads every proxy's certificates, and tells the
//! browsers. The last minutes of each row's figures are kept for the charts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::watch;

use super::certs::{LeafCertificate, RootCertificate};
use super::history::History;
use super::options::DashboardOptions;
use super::requests::{RequestEdge, request_edges};
use super::source::{Found, Source};
use crate::operator::check::Check;
use crate::operator::routes::{RouteRow, route_rows};
use crate::operator::stat::{Edge, Resource, Row, Target, edges, rows};
use crate::operator::window::{Scraped, Window};

/// How long the charts look back.
const HISTORY: Duration = Duration::from_secs(10 * 60);

/// What one refresh found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Unix seconds of the refresh.
    pub at: u64,
    /// Seconds the figures were measured over (0 until two scrapes exist).
    pub window_seconds: f64,
    /// Why the mesh could not be read, when it could not.
    pub error: Option<String>,
    /// `stat ns` rows.
    pub namespaces: Vec<Row>,
    /// `stat deploy` rows.
    pub deployments: Vec<Row>,
    /// `stat svc` rows.
    pub services: Vec<Row>,
    /// `edges` of the window.
    pub edges: Vec<Edge>,
    /// The requests of each (client, server) pair the waypoints saw.
    pub request_edges: Vec<RequestEdge>,
    /// Proxies whose metrics could not be read, with why.
    pub unreachable: Vec<String>,
    /// `check`'s checks.
    pub checks: Vec<Check>,
    /// Every proxy's workload certificates.
    pub certificates: Vec<LeafCertificate>,
    /// The CA root.
    pub root: Option<RootCertificate>,
    /// How long the refresh took, milliseconds (checks, scrapes and certificates).
    pub took_ms: u64,
}

/// One scrape of every proxy.
struct Scrape {
    taken: Instant,
    names: Vec<String>,
    scraped: Vec<Scraped>,
}

/// What the sampler keeps between refreshes.
struct State {
    snapshot: Arc<Snapshot>,
    history: History,
    scrapes: VecDeque<Scrape>,
    /// The window of `scrapes`, built once per refresh for every figure and route query.
    window: Option<Window>,
}

/// The sampler's findings, shared with the server.
pub struct Shared {
    /// The mesh looked at.
    pub source: Source,
    /// How the dashboard runs.
    pub options: DashboardOptions,
    state: Mutex<State>,
    refreshed: watch::Sender<u64>,
}

impl Shared {
    /// Nothing measured yet.
    pub fn new(source: Source, options: DashboardOptions) -> Arc<Self> {
        let keep = (HISTORY.as_secs_f64() / options.refresh.as_secs_f64().max(0.1)) as usize;
        Arc::new(Self {
            source,
            options,
            state: Mutex::new(State {
                snapshot: Arc::new(Snapshot::default()),
                history: History::new(keep),
                scrapes: VecDeque::new(),
                window: None,
            }),
            refreshed: watch::channel(0).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves figures that are still worth showing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest refresh.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state().snapshot.clone()
    }

    /// The points of one row (`deploy`, `svc` or `ns`).
    pub fn history(&self, kind: &str, namespace: &str, name: &str) -> Vec<super::history::Point> {
        self.state().history.of(kind, namespace, name)
    }

    /// `routes svc/NAME`'s rows over the current window; `None` before two scrapes exist.
    pub fn routes(&self, namespace: &str, name: &str) -> Option<Vec<RouteRow>> {
        let state = self.state();
        let window = state.window.as_ref()?;
        Some(route_rows(
            namespace,
            name,
            &window.increase,
            window.seconds,
        ))
    }

    /// Hears every refresh.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.refreshed.subscribe()
    }

    /// Refreshes forever, every `options.refresh`.
    pub fn run(self: Arc<Self>) {
        let mut count = 0u64;
        loop {
            let began = Instant::now();
            self.refresh();
            count += 1;
            self.refreshed.send_replace(count);
            std::thread::sleep(self.options.refresh.saturating_sub(began.elapsed()));
        }
    }

    /// One refresh.
    fn refresh(&self) {
        let (at, began) = (unix_now(), Instant::now());
        let found = match self.source.read(at) {
            Ok(found) => found,
            Err(error) => {
                // The last figures stay on show, marked stale by the error (a verb may hold
                // the sandbox's lock for a while; an API server may be unreachable).
                let mut state = self.state();
                let mut snapshot = (*state.snapshot).clone();
                (snapshot.at, snapshot.error) = (at, Some(error));
                state.snapshot = Arc::new(snapshot);
                return;
            }
        };
        let scrape = Scrape {
            taken: Instant::now(),
            names: found.names.clone(),
            scraped: found.scraped.clone(),
        };
        let mut guard = self.state();
        let state = &mut *guard;
        keep(
            &mut state.scrapes,
            scrape,
            self.options.window,
            Instant::now(),
        );
        state.window = window_of(&state.scrapes);
        let mut snapshot = Snapshot {
            at,
            checks: found.checks.clone(),
            certificates: found.certificates.clone(),
            root: found.root.clone(),
            ..Snapshot::default()
        };
        if let Some(window) = &state.window {
            measure(&mut snapshot, window, &found);
            let seconds = snapshot.window_seconds;
            for (kind, rows) in [
                ("ns", &snapshot.namespaces),
                ("deploy", &snapshot.deployments),
                ("svc", &snapshot.services),
            ] {
                state.history.record(kind, rows, at, seconds);
            }
        }
        snapshot.took_ms = began.elapsed().as_millis() as u64;
        state.snapshot = Arc::new(snapshot);
    }
}

/// Adds `scrape`, keeping as the window's start the newest scrape at least `window` old at
/// `now`.
fn keep(scrapes: &mut VecDeque<Scrape>, scrape: Scrape, window: Duration, now: Instant) {
    if scrapes
        .back()
        .is_some_and(|last| last.names != scrape.names)
    {
        // A proxy came or went: scrapes of other proxies do not subtract.
        scrapes.clear();
    }
    scrapes.push_back(scrape);
    while scrapes.len() > 2 && now.duration_since(scrapes[1].taken) >= window {
        scrapes.pop_front();
    }
}

/// Fills `snapshot` with `stat`'s rows, `edges` and the request edges of `window`, through
/// the same model functions `stat` and `edges` call (`Measured::of` and `SeenEdges::of` would
/// need the window rebuilt for each).
fn measure(snapshot: &mut Snapshot, window: &Window, found: &Found) {
    let measure_rows = |resource, targets: &[Target]| {
        rows(
            resource,
            targets,
            &window.increase,
            &window.now,
            window.seconds,
        )
    };
    snapshot.window_seconds = window.seconds;
    snapshot.unreachable = window.unreachable.clone();
    snapshot.namespaces = measure_rows(Resource::Namespace, &found.namespaces);
    snapshot.deployments = measure_rows(Resource::Deployment, &found.deployments);
    snapshot.services = measure_rows(Resource::Service, &found.services);
    snapshot.edges = edges(&window.increase, None);
    snapshot.request_edges = request_edges(window);
}

/// The window from the oldest kept scrape to the newest; `None` with fewer than two.
fn window_of(scrapes: &VecDeque<Scrape>) -> Option<Window> {
    let (first, last) = (scrapes.front()?, scrapes.back()?);
    if scrapes.len() < 2 {
        return None;
    }
    let seconds = last.taken.duration_since(first.taken).as_secs_f64();
    Some(Window::of(
        &last.names,
        first.scraped.clone(),
        last.scraped.clone(),
        seconds,
    ))
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_now() -> u64 {
    unix(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use prometheus_registry::scrape::Sample;

    use super::*;

    fn scrape(taken: Instant, names: &[&str], opened: f64) -> Scrape {
        let sample = Sample::new(
            "istio_tcp_connections_opened_total",
            &[("reporter", "destination")],
            opened,
        );
        Scrape {
            taken,
            names: names.iter().map(|n| n.to_string()).collect(),
            scraped: names.iter().map(|_| Ok(vec![sample.clone()])).collect(),
        }
    }

    #[test]
    fn the_window_starts_at_the_newest_scrape_a_window_old_and_restarts_when_proxies_change() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let window = Duration::from_secs(10);
        let mut scrapes = VecDeque::new();
        keep(
            &mut scrapes,
            scrape(at(0), &["ztunnel node1"], 0.0),
            window,
            at(0),
        );
        assert!(window_of(&scrapes).is_none(), "one scrape is no window");
        for (second, opened) in [(5, 5.0), (10, 10.0), (15, 15.0), (20, 20.0)] {
            let next = scrape(at(second), &["ztunnel node1"], opened);
            keep(&mut scrapes, next, window, at(second));
        }
        let w = window_of(&scrapes).unwrap();
        assert_eq!(w.seconds, 10.0);
        assert_eq!(w.increase[0].value, 10.0);
        // A new proxy: what the others counted before cannot be subtracted from its counts.
        let both = ["ztunnel node1", "ztunnel node2"];
        keep(&mut scrapes, scrape(at(25), &both, 25.0), window, at(25));
        assert!(window_of(&scrapes).is_none());
        keep(&mut scrapes, scrape(at(27), &both, 27.0), window, at(27));
        assert_eq!(window_of(&scrapes).unwrap().seconds, 2.0);
    }
}
