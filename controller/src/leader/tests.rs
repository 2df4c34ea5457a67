//! The election against a Lease kept in memory, on tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::ObjectMeta;

use super::election::Attempt;
use super::*;

/// Another replica's write, made between this one's read and write.
type Interleaved = Box<dyn FnOnce(&mut State) + Send>;

/// What the API server would hold, and the faults a test injects.
#[derive(Default)]
struct State {
    lease: Option<Lease>,
    version: u64,
    /// Every call fails (the API server is away).
    failing: bool,
    /// Every call hangs.
    hanging: bool,
    /// Runs once right after the next read: another replica writing meanwhile.
    after_read: Option<Interleaved>,
    writes: Vec<String>,
}

impl State {
    fn store(&mut self, mut lease: Lease) -> Lease {
        self.version += 1;
        lease.metadata.resource_version = Some(self.version.to_string());
        self.lease = Some(lease.clone());
        lease
    }

    fn spec(&self) -> LeaseSpec {
        self.lease
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Memory(Arc<Mutex<State>>);

impl Memory {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// The Lease as another replica `holder` writes it.
    fn held_by(&self, holder: &str) {
        let mut state = self.state();
        let transitions = state.spec().lease_transitions.unwrap_or(0);
        let lease = lease_of(holder, transitions + 1);
        state.store(lease);
    }

    fn holder(&self) -> Option<String> {
        self.state().spec().holder_identity
    }

    async fn gate(&self) -> Result<(), LeaseError> {
        let (failing, hanging) = {
            let state = self.state();
            (state.failing, state.hanging)
        };
        if hanging {
            std::future::pending::<()>().await;
        }
        if failing {
            return Err(LeaseError::Api("connection refused".into()));
        }
        Ok(())
    }
}

fn lease_of(holder: &str, transitions: i32) -> Lease {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    Lease {
        metadata: ObjectMeta {
            name: Some("mesh-controller-leader".into()),
            namespace: Some("istio-system".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(now.clone()),
            acquire_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

impl LeaseStore for Memory {
    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        self.gate().await?;
        let mut state = self.state();
        let lease = state.lease.clone();
        if let Some(after) = state.after_read.take() {
            after(&mut state);
        }
        Ok(lease)
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.gate().await?;
        let mut state = self.state();
        if state.lease.is_some() {
            return Err(LeaseError::Conflict);
        }
        state.writes.push("create".into());
        Ok(state.store(lease.clone()))
    }

    async fn replace(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.gate().await?;
        let mut state = self.state();
        let current = state
            .lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.clone());
        if current != lease.metadata.resource_version {
            return Err(LeaseError::Conflict);
        }
        state.writes.push("replace".into());
        Ok(state.store(lease.clone()))
    }
}

fn elector(store: &Memory, identity: &str) -> (Elector<Memory>, Leadership, Arc<LeaderMetrics>) {
    let metrics = Arc::new(LeaderMetrics::default());
    let settings = LeaderSettings::new("istio-system", identity);
    let (elector, leadership) = Elector::new(store.clone(), settings, metrics.clone());
    (elector, leadership, metrics)
}

#[tokio::test(start_paused = true)]
async fn acquires_an_absent_lease_and_renews_it() {
    let store = Memory::default();
    let (mut a, leadership, metrics) = elector(&store, "controller-a");
    assert!(!leadership.is_leader());
    a.step().await;
    assert!(leadership.is_leader());
    let spec = store.state().spec();
    assert_eq!(spec.holder_identity.as_deref(), Some("controller-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));
    let acquired = spec.acquire_time.clone();
    tokio::time::advance(Duration::from_secs(2)).await;
    a.step().await;
    let renewed = store.state().spec();
    assert_eq!(
        renewed.acquire_time, acquired,
        "renewal keeps the acquire time"
    );
    assert_eq!(renewed.lease_transitions, Some(0));
    assert_eq!(store.state().writes, ["create", "replace"]);
    assert!(leadership.is_leader());
    let mut text = String::new();
    metrics.render(&mut text);
    assert!(text.contains("leader_election_master_status{name=\"mesh-controller-leader\"} 1\n"));
    assert!(text.contains("controller_leader_transitions_total{change=\"acquired\"} 1\n"));
}

#[tokio::test(start_paused = true)]
async fn waits_while_another_replica_renews_then_takes_over_once_it_stops() {
    let store = Memory::default();
    store.held_by("controller-b");
    let (mut a, leadership, _) = elector(&store, "controller-a");
    // B renews every 2 s for a minute: its lease never looks expired to A.
    for _ in 0..30 {
        a.step().await;
        assert_eq!(
            a.try_acquire_or_renew().await.unwrap(),
            Attempt::HeldBy("controller-b".into())
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        store.held_by("controller-b");
    }
    assert!(!leadership.is_leader());
    assert!(
        store.state().writes.is_empty(),
        "a follower never writes the Lease"
    );
    // B stops renewing: A takes over once the record has stayed unchanged for 15 s.
    a.step().await;
    tokio::time::advance(Duration::from_secs(14)).await;
    a.step().await;
    assert!(!leadership.is_leader(), "not expired yet");
    tokio::time::advance(Duration::from_secs(1)).await;
    a.step().await;
    assert!(leadership.is_leader());
    let spec = store.state().spec();
    assert_eq!(spec.holder_identity.as_deref(), Some("controller-a"));
    assert_eq!(
        spec.lease_transitions,
        Some(32),
        "B's 31 writes, then A's takeover"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_by_this_identity_or_released_is_taken_at_once() {
    let store = Memory::default();
    store.held_by("controller-a");
    let (mut a, leadership, _) = elector(&store, "controller-a");
    a.step().await;
    assert!(
        leadership.is_leader(),
        "a restarted pod takes back its own lease"
    );
    let store = Memory::default();
    store.held_by("");
    let (mut b, leadership, _) = elector(&store, "controller-b");
    b.step().await;
    assert!(leadership.is_leader(), "a released lease is free");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_the_lease_expires() {
    for hanging in [false, true] {
        let store = Memory::default();
        let (a, mut leadership, metrics) = elector(&store, "controller-a");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(a.run(async {
            let _ = stopped.await;
        }));
        leadership.acquired().await;
        let last_renewal = tokio::time::Instant::now();
        {
            let mut state = store.state();
            state.failing = !hanging;
            state.hanging = hanging;
        }
        leadership.changed().await;
        assert!(!leadership.is_leader());
        // Stepped down before any follower could consider the lease expired (15 s after the
        // last renewal it saw), never earlier than the renew deadline (10 s).
        let stepped_down = last_renewal.elapsed();
        assert!(stepped_down < Duration::from_secs(15), "{stepped_down:?}");
        assert!(stepped_down >= Duration::from_secs(8), "{stepped_down:?}");
        assert_eq!(store.holder().as_deref(), Some("controller-a"));
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(
            text.contains("leader_election_master_status{name=\"mesh-controller-leader\"} 0\n")
        );
        assert!(text.contains("controller_leader_transitions_total{change=\"lost\"} 1\n"));
        let _ = stop.send(());
        task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_conflict_means_another_replica_won_and_is_read_again() {
    // Creating: B creates the Lease between A's read and A's create.
    let store = Memory::default();
    store.state().after_read = Some(Box::new(move |state| {
        state.store(lease_of("controller-b", 0));
    }));
    let (mut a, leadership, _) = elector(&store, "controller-a");
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Conflict);
    a.step().await;
    assert!(!leadership.is_leader());
    assert_eq!(store.holder().as_deref(), Some("controller-b"));

    // Renewing: B takes the Lease between A's read and A's write; A's write carries a stale
    // resourceVersion, is refused, and A steps down on reading B's record.
    let store = Memory::default();
    let (mut a, leadership, _) = elector(&store, "controller-a");
    a.step().await;
    assert!(leadership.is_leader());
    store.state().after_read = Some(Box::new(|state| {
        state.store(lease_of("controller-b", 1));
    }));
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Conflict);
    a.step().await;
    assert!(!leadership.is_leader());
    assert_eq!(store.holder().as_deref(), Some("controller-b"));
}

#[tokio::test(start_paused = true)]
async fn shutting_down_releases_the_lease_for_the_next_replica() {
    let store = Memory::default();
    let (a, mut leadership, _) = elector(&store, "controller-a");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(a.run(async {
        let _ = stopped.await;
    }));
    leadership.acquired().await;
    let _ = stop.send(());
    task.await.unwrap();
    assert!(!leadership.is_leader());
    let spec = store.state().spec();
    assert_eq!(spec.holder_identity, None);
    assert_eq!(spec.lease_duration_seconds, Some(1));
    let (mut b, next, _) = elector(&store, "controller-b");
    b.step().await;
    assert!(next.is_leader());
    assert_eq!(store.state().spec().lease_transitions, Some(1));
}

#[test]
fn timings_that_could_make_two_leaders_are_refused() {
    let mut settings = LeaderSettings::new("istio-system", "a");
    assert_eq!(settings.validate(), Ok(()));
    assert_eq!(settings.lease_duration_seconds(), 15);
    settings.renew_deadline = Duration::from_secs(15);
    assert!(
        settings
            .validate()
            .unwrap_err()
            .contains("--leader-elect-renew-deadline")
    );
    settings.renew_deadline = Duration::from_secs(10);
    settings.retry_period = Duration::from_secs(10);
    assert!(
        settings
            .validate()
            .unwrap_err()
            .contains("--leader-elect-retry-period")
    );
    settings.retry_period = Duration::from_millis(200);
    settings.lease_duration = Duration::from_millis(1500);
    settings.renew_deadline = Duration::from_secs(1);
    assert_eq!(settings.validate(), Ok(()));
    assert_eq!(settings.lease_duration_seconds(), 2, "rounded up");
    settings.identity.clear();
    assert!(settings.validate().unwrap_err().contains("POD_NAME"));
}
