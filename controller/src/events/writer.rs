//! The Event writer: each round turns the problems of the latest translation into Events on
//! the objects (see [`super::memory`] for what is written when), and sends them.
//!
//! It runs beside translation and xDS and never holds them up: it reads the problems from a
//! watch channel, and a failure to write (403 without RBAC, the API server away) is logged
//! once, counted, and ends the round; nothing is written again until the next series
//! interval, however often the problems change meanwhile. Writes the rate limit refused are
//! tried again once the bucket has refilled. With several replicas only the leader writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::{self, MAX_INSTANCE, Reporter};
use super::memory::{Decision, Limits, Occurrence, Recorder, Written};
use super::metrics::{EventMetrics, EventResult};
use super::reason::{classify, note, truncate};
use crate::leader::Leadership;
use crate::model::{ObjectKey, Problem};
use crate::source::kube::{KUBERNETES_ORIGIN, ObservedMap, WatchedKind};
use crate::status::CONTROLLER_NAME;

/// Shortest time between two rounds that nothing asked for.
const MIN_TICK: Duration = Duration::from_secs(1);

/// Settings of the Event writer.
#[derive(Clone, Debug, PartialEq)]
pub struct EventSettings {
    /// `reportingInstance`: the controller's pod name.
    pub instance: String,
    /// Rate, memory and series bounds.
    pub limits: Limits,
    /// How long changes settle before a round: an edit typically yields a new index and a
    /// new translation in quick succession.
    pub settle: Duration,
}

impl EventSettings {
    /// The defaults, reporting as `instance`.
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_string(),
            limits: Limits::default(),
            settle: Duration::from_millis(500),
        }
    }

    /// The controller's pod name: `POD_NAME` (set from the downward API), else `HOSTNAME`
    /// (a pod's host name is its name), else the controller's name.
    pub fn instance_from_env() -> String {
        ["POD_NAME", "HOSTNAME"]
            .iter()
            .filter_map(|var| std::env::var(var).ok())
            .find(|name| !name.is_empty())
            .unwrap_or_else(|| "mesh-controller".to_string())
    }
}

/// What one round did: how many Events ended with each result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally([u32; EventResult::ALL.len()]);

impl Tally {
    /// How many ended with `result`.
    pub fn get(&self, result: EventResult) -> u32 {
        self.0[result as usize]
    }

    fn add(&mut self, result: EventResult) {
        self.0[result as usize] += 1;
    }
}

/// Errors of one Event write; logged once and counted, never fatal.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The API server refused or failed the write.
    #[error("writing Event {namespace}/{name} about {object}: {source}")]
    Write {
        /// Namespace of the Event.
        namespace: String,
        /// Name of the Event.
        name: String,
        /// The object the Event is about.
        object: ObjectKey,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
}

impl EventError {
    /// True when the API server refuses every write, not this one (no RBAC, overloaded,
    /// away): the rest of the round would fail alike.
    fn refuses_all(&self) -> bool {
        let EventError::Write { source, .. } = self;
        match &**source {
            // Gone namespace, name taken, invalid Event: about this Event alone.
            kube::Error::Api(s) => !(s.is_not_found() || s.is_already_exists() || s.is_invalid()),
            _ => true,
        }
    }

    fn is_not_found(&self) -> bool {
        let EventError::Write { source, .. } = self;
        matches!(&**source, kube::Error::Api(s) if s.is_not_found())
    }
}

/// Writes Events through a Kubernetes client, remembering what it wrote.
pub struct EventWriter {
    client: kube::Client,
    reporter: Reporter,
    recorder: Recorder,
    metrics: Arc<EventMetrics>,
    settle: Duration,
    /// Time between rounds when nothing changes: the series interval.
    tick: Duration,
    /// Time for the rate limit's bucket to refill.
    refill: Duration,
    /// A write failed and no write succeeded since: further failures are not logged.
    failing: bool,
    /// The API server refused every write: nothing is sent before this.
    paused_until: Option<Instant>,
    /// Events are written only while this replica leads.
    leadership: Leadership,
}

impl EventWriter {
    /// A writer through `client`, counting into `metrics`.
    pub fn new(client: kube::Client, settings: EventSettings, metrics: Arc<EventMetrics>) -> Self {
        let seed = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
        let limits = &settings.limits;
        let tick = limits.series_interval.max(MIN_TICK);
        let refill = Duration::try_from_secs_f64(f64::from(limits.burst) / limits.per_second)
            .map_or(tick, |d| d.clamp(MIN_TICK, tick));
        Self {
            client,
            reporter: Reporter {
                controller: CONTROLLER_NAME.to_string(),
                instance: truncate(settings.instance, MAX_INSTANCE),
            },
            recorder: Recorder::new(settings.limits, Instant::now(), seed as u64),
            metrics,
            settle: settings.settle,
            tick,
            refill,
            failing: false,
            paused_until: None,
            leadership: Leadership::always(),
        }
    }

    /// Writes only while `leadership` says this replica leads (one replica among several):
    /// a follower writes nothing, so each problem gets one Event, not one per replica.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Writes rounds until either channel closes: on every change of the problems or of
    /// the observed objects (a recreated object has a new uid), once per series interval
    /// (series fall due, failed writes are tried again), and once the rate limit's bucket
    /// has refilled after it refused some. Nothing is written before the first translation.
    pub async fn run(
        mut self,
        mut problems: watch::Receiver<Option<Arc<Vec<Problem>>>>,
        mut observed: watch::Receiver<Arc<ObservedMap>>,
    ) {
        let mut wait = self.tick;
        let mut leadership = self.leadership.clone();
        loop {
            tokio::select! {
                changed = problems.changed() => if changed.is_err() { return },
                changed = observed.changed() => if changed.is_err() { return },
                () = leadership.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
            if !leadership.is_leader() {
                continue;
            }
            tokio::time::sleep(self.settle).await;
            // Both marked seen, so that a change of either wakes the next round only.
            let objects = observed.borrow_and_update().clone();
            let Some(current) = problems.borrow_and_update().clone() else {
                continue;
            };
            let tally = self.write(&current, &objects).await;
            wait = if tally.get(EventResult::RateLimited) > 0 {
                self.refill
            } else {
                self.tick
            };
        }
    }

    /// One round: forgets what was fixed or deleted, then creates or updates the Events
    /// `problems` call for, as far as the limits allow.
    pub async fn write(&mut self, problems: &[Problem], observed: &ObservedMap) -> Tally {
        let now = Instant::now();
        let standing = occurrences(problems, observed);
        self.recorder.retain(&standing.keys().cloned().collect());
        let mut tally = Tally::default();
        if self.paused_until.is_some_and(|until| now < until) {
            return tally;
        }
        for (occurrence, kind) in &standing {
            if !self.leadership.is_leader() {
                break;
            }
            let written = match self.recorder.decide(occurrence, now) {
                Decision::Nothing => continue,
                Decision::RateLimited => Ok(EventResult::RateLimited),
                Decision::MemoryFull => Ok(EventResult::MemoryFull),
                Decision::Create => self.create(occurrence, kind, now).await,
                Decision::Refresh(event) => self.refresh(occurrence, kind, event).await,
            };
            let result = written.as_ref().copied().unwrap_or(EventResult::Failed);
            tally.add(result);
            self.metrics.count(result);
            match written {
                Ok(EventResult::Created | EventResult::Updated) => self.succeeded(),
                Ok(_) => {}
                Err(e) => {
                    self.failed(&e);
                    if e.refuses_all() {
                        self.paused_until = Some(now + self.tick);
                        break;
                    }
                }
            }
        }
        tally
    }

    async fn create(
        &mut self,
        occurrence: &Occurrence,
        kind: &WatchedKind,
        now: Instant,
    ) -> Result<EventResult, EventError> {
        let name = self.recorder.name_for(&occurrence.object.name);
        let namespace = body::event_namespace(&occurrence.object.namespace).to_string();
        let time = body::micro_time(k8s_openapi::jiff::Timestamp::now());
        let event = body::new_event(occurrence, kind, &name, &self.reporter, &time);
        let sent = self
            .api(&namespace)
            .create(&PostParams::default(), &event)
            .await;
        if let Err(source) = sent {
            return Err(error(&namespace, &name, occurrence, source));
        }
        let written = Written {
            namespace,
            name,
            count: 1,
            at: now,
        };
        self.recorder.written(occurrence.clone(), written);
        Ok(EventResult::Created)
    }

    /// Updates the series of `event`; an Event that expired meanwhile is created anew.
    async fn refresh(
        &mut self,
        occurrence: &Occurrence,
        kind: &WatchedKind,
        event: Written,
    ) -> Result<EventResult, EventError> {
        let time = body::micro_time(k8s_openapi::jiff::Timestamp::now());
        let patch = body::series_patch(event.count, &time);
        let sent = self
            .api(&event.namespace)
            .patch(&event.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match sent {
            Ok(_) => {
                self.recorder.written(occurrence.clone(), event);
                Ok(EventResult::Updated)
            }
            Err(source) => {
                let e = error(&event.namespace, &event.name, occurrence, source);
                if !e.is_not_found() {
                    return Err(e);
                }
                self.recorder.forget(occurrence);
                self.create(occurrence, kind, event.at).await
            }
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &body::resource())
    }

    fn succeeded(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!("Kubernetes Events are written again");
        }
    }

    fn failed(&mut self, e: &EventError) {
        if std::mem::replace(&mut self.failing, true) {
            tracing::debug!(error = %e, "Event not written");
        } else {
            tracing::warn!(
                error = %e,
                "Kubernetes Events not written (does the controller's ClusterRole allow create \
                 and patch on events.k8s.io events?); further failures are only counted in \
                 controller_events_total{{result=\"failed\"}} until a write succeeds"
            );
        }
    }
}

fn error(namespace: &str, name: &str, occurrence: &Occurrence, source: kube::Error) -> EventError {
    EventError::Write {
        namespace: namespace.to_string(),
        name: name.to_string(),
        object: occurrence.object.clone(),
        source: Box::new(source),
    }
}

/// The occurrences `problems` make, on objects read from the Kubernetes API and observed
/// (an object not yet observed is decided on the round its watch event brings), in a
/// stable order.
fn occurrences(
    problems: &[Problem],
    observed: &ObservedMap,
) -> BTreeMap<Occurrence, &'static WatchedKind> {
    problems
        .iter()
        .filter(|p| p.origin.starts_with(KUBERNETES_ORIGIN))
        .filter_map(|p| {
            let object = ObjectKey::new(&p.kind, &p.namespace, &p.name);
            let seen = observed.get(&object)?;
            let occurrence = Occurrence {
                object,
                uid: seen.uid.clone(),
                reason: classify(p),
                note: note(p),
            };
            Some((occurrence, seen.kind))
        })
        .collect()
}
