//! The election, as client-go's `leaderelection` runs it: every retry period a replica reads
//! the Lease and takes it when it is absent, released, or expired, or renews it when it holds
//! it. Expiry is judged on the replica's own clock: a record counts as expired once it has
//! stayed unchanged for its `leaseDurationSeconds` since this replica first saw it, so clock
//! skew between replicas does not matter. Writes carry the `resourceVersion` read, so of two
//! replicas racing only one succeeds (the other gets 409 Conflict and reads again).
//!
//! A leader that has not renewed within the renew deadline steps down at once, before any
//! follower can consider the lease expired (the deadline is shorter than the lease).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::ObjectMeta;
use tokio::sync::watch;
use tokio::time::Instant;

use super::leadership::Leadership;
use super::metrics::LeaderMetrics;
use super::settings::LeaderSettings;
use super::store::{LeaseError, LeaseStore};

/// Followers wait between one and 2.2 retry periods between attempts (client-go's jitter
/// factor 1.2), so that they do not all ask at once.
const JITTER_FACTOR: f64 = 1.2;

/// What one attempt to acquire or renew found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease: it was created, taken over or renewed.
    Held,
    /// Another replica holds a Lease that has not expired.
    HeldBy(String),
    /// Another replica wrote the Lease between this one's read and write (409): the next
    /// attempt reads it again.
    Conflict,
}

/// One replica's side of the election. [`Elector::run`] drives it; the [`Leadership`] it
/// returns tells the writers.
pub struct Elector<S> {
    store: S,
    settings: LeaderSettings,
    metrics: Arc<LeaderMetrics>,
    sender: watch::Sender<bool>,
    /// The record last read or written, and when this replica first saw it so.
    observed: Option<(LeaseSpec, Instant)>,
    /// The Lease as last written by this replica (its `resourceVersion` for the release).
    written: Option<Lease>,
    /// When the last successful acquisition or renewal was sent, while leading.
    renewed_at: Option<Instant>,
    /// State of the jitter's random numbers (xorshift).
    random: u64,
}

impl<S: LeaseStore> Elector<S> {
    /// An elector for `settings` over `store`, not leading yet.
    pub fn new(
        store: S,
        settings: LeaderSettings,
        metrics: Arc<LeaderMetrics>,
    ) -> (Self, Leadership) {
        let (sender, receiver) = watch::channel(false);
        metrics.elect(&settings.lease_name);
        let seed = k8s_openapi::jiff::Timestamp::now().as_nanosecond() as u64;
        let random = (seed ^ u64::from(std::process::id())) | 1;
        let elector = Self {
            store,
            settings,
            metrics,
            sender,
            observed: None,
            written: None,
            renewed_at: None,
            random,
        };
        (elector, Leadership::from_receiver(receiver))
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        *self.sender.borrow()
    }

    /// Acquires and renews until `shutdown` completes; then, if leading, stops leading and
    /// releases the Lease so that another replica takes over without waiting for it to
    /// expire.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tracing::info!(
            lease = %format!("{}/{}", self.settings.namespace, self.settings.lease_name),
            identity = %self.settings.identity, "leader election started"
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = self.step() => {}
                () = &mut shutdown => break,
            }
            let wait = self.next_wait();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => break,
            }
        }
        self.release().await;
    }

    /// One round: steps down if the renew deadline has passed, else attempts, bounded by
    /// what is left of the deadline while leading, and acts on the outcome.
    pub async fn step(&mut self) {
        let started = Instant::now();
        let Some(budget) = self.budget(started) else {
            self.step_down("the lease was not renewed within the renew deadline");
            return;
        };
        let outcome = tokio::time::timeout(budget, self.try_acquire_or_renew())
            .await
            .unwrap_or_else(|_| {
                Err(LeaseError::Api(
                    "no answer within the renew deadline".into(),
                ))
            });
        match outcome {
            Ok(Attempt::Held) => {
                self.renewed_at = Some(started);
                if !self.is_leader() {
                    self.lead();
                }
            }
            Ok(Attempt::HeldBy(holder)) => {
                if self.is_leader() {
                    self.step_down(&format!("the lease is held by {holder}"));
                } else {
                    tracing::debug!(%holder, "the lease is held by another replica");
                }
            }
            Ok(Attempt::Conflict) => tracing::debug!("the lease changed meanwhile; reading again"),
            Err(e) => {
                if self.is_leader() {
                    tracing::warn!(error = %e, "renewing the lease failed; retrying");
                } else {
                    tracing::debug!(error = %e, "acquiring the lease failed; retrying");
                }
            }
        }
        if self.budget(Instant::now()).is_none() {
            self.step_down("the lease was not renewed within the renew deadline");
        }
    }

    /// How long an attempt may take: the rest of the renew deadline while leading (`None`
    /// once it has passed), the deadline itself otherwise.
    fn budget(&self, now: Instant) -> Option<Duration> {
        match self.renewed_at {
            Some(at) if self.is_leader() => {
                let left = (at + self.settings.renew_deadline).saturating_duration_since(now);
                (!left.is_zero()).then_some(left)
            }
            _ => Some(self.settings.renew_deadline),
        }
    }

    /// The wait before the next round: the retry period while leading (never past the
    /// renew deadline), the retry period with jitter while following.
    fn next_wait(&mut self) -> Duration {
        let retry = self.settings.retry_period;
        if self.is_leader() {
            return self
                .budget(Instant::now())
                .map_or(Duration::ZERO, |left| left.min(retry));
        }
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        let fraction = (self.random % 1_000_000) as f64 / 1_000_000.0;
        retry.mul_f64(1.0 + fraction * JITTER_FACTOR)
    }

    /// One read and, when the Lease is free, expired or this replica's, one write.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, LeaseError> {
        let now = Instant::now();
        let wall = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let me = self.settings.identity.clone();
        let Some(mut lease) = self.store.get().await? else {
            let spec = LeaseSpec {
                holder_identity: Some(me),
                lease_duration_seconds: Some(self.settings.lease_duration_seconds()),
                acquire_time: Some(wall.clone()),
                renew_time: Some(wall),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.lease_name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            return self.written(self.store.create(&lease).await, now);
        };
        let current = lease.spec.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != current)
        {
            self.observed = Some((current.clone(), now));
        }
        let holder = current.holder_identity.clone().unwrap_or_default();
        if !holder.is_empty() && holder != me && !self.expired(&current, now) {
            return Ok(Attempt::HeldBy(holder));
        }
        let transitions = current.lease_transitions.unwrap_or(0);
        let mut desired = current.clone();
        if holder == me {
            desired.acquire_time = current.acquire_time.or(Some(wall.clone()));
            desired.lease_transitions = Some(transitions);
        } else {
            desired.acquire_time = Some(wall.clone());
            desired.lease_transitions = Some(transitions.saturating_add(1));
        }
        desired.holder_identity = Some(me);
        desired.lease_duration_seconds = Some(self.settings.lease_duration_seconds());
        desired.renew_time = Some(wall);
        lease.spec = Some(desired);
        // The metadata read, resourceVersion included, goes back: a stale one is a 409.
        self.written(self.store.replace(&lease).await, now)
    }

    /// Whether `record`, unchanged since this replica first saw it, has outlived its lease.
    fn expired(&self, record: &LeaseSpec, now: Instant) -> bool {
        let seconds = record
            .lease_duration_seconds
            .unwrap_or_else(|| self.settings.lease_duration_seconds());
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        seen_at + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)) <= now
    }

    /// What a write begun at `at` amounts to; a successful one is the record now observed.
    fn written(
        &mut self,
        sent: Result<Lease, LeaseError>,
        at: Instant,
    ) -> Result<Attempt, LeaseError> {
        match sent {
            Ok(lease) => {
                self.observed = Some((lease.spec.clone().unwrap_or_default(), at));
                self.written = Some(lease);
                Ok(Attempt::Held)
            }
            Err(LeaseError::Conflict) => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    fn lead(&mut self) {
        self.sender.send_replace(true);
        self.metrics.acquired();
        tracing::info!(
            lease = %self.settings.lease_name, identity = %self.settings.identity,
            "acquired leadership: this replica writes to the cluster"
        );
    }

    fn step_down(&mut self, why: &str) {
        self.renewed_at = None;
        if !self.is_leader() {
            return;
        }
        self.sender.send_replace(false);
        self.metrics.lost();
        tracing::info!(
            lease = %self.settings.lease_name, identity = %self.settings.identity,
            "lost leadership ({why}): this replica stops writing"
        );
    }

    /// Stops leading and hands the Lease back: no holder, a one-second lease (as client-go
    /// releases it), so a follower takes it on its next attempt.
    async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        self.step_down("shutting down");
        let Some(mut lease) = self.written.take() else {
            return;
        };
        let wall = MicroTime(k8s_openapi::jiff::Timestamp::now());
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(wall.clone());
            spec.renew_time = Some(wall);
        }
        let budget = self.settings.retry_period;
        match tokio::time::timeout(budget, self.store.replace(&lease)).await {
            Ok(Ok(_)) => tracing::info!(lease = %self.settings.lease_name, "lease released"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the lease failed; it expires instead")
            }
            Err(_) => tracing::warn!("releasing the lease took too long; it expires instead"),
        }
    }
}
