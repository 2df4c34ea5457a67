//! The state machine against a recording launcher, with real network namespace descriptors.

use std::fs::File;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// Records starts and drains; fails to start the uids in `failing`.
#[derive(Default)]
pub(crate) struct FakeLauncher {
    pub(crate) events: Mutex<Vec<String>>,
    pub(crate) failing: Mutex<HashSet<String>>,
    next: AtomicU32,
}

/// A started fake proxy.
pub(crate) struct FakeProxy {
    id: u32,
}

impl Launcher for Arc<FakeLauncher> {
    type Proxy = FakeProxy;

    async fn start(&self, pod: &PodInfo, _netns: Arc<PodNetns>) -> Result<FakeProxy, String> {
        if lock(&self.failing).contains(&pod.uid) {
            lock(&self.events).push(format!("fail {}", pod.uid));
            return Err("address in use".into());
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.events).push(format!("start {} #{id}", pod.uid));
        Ok(FakeProxy { id })
    }

    async fn drain(&self, pod: &PodInfo, proxy: FakeProxy, deadline: Duration) {
        lock(&self.events).push(format!(
            "drain {} #{} {}s",
            pod.uid,
            proxy.id,
            deadline.as_secs()
        ));
    }

    fn active_connections(&self, proxy: &FakeProxy) -> usize {
        proxy.id as usize
    }
}

impl FakeLauncher {
    pub(crate) fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.events))
    }
}

/// This process's own network namespace.
pub(crate) fn current_netns() -> OwnedFd {
    File::open("/proc/self/ns/net").unwrap().into()
}

/// A fresh, empty network namespace, alive as long as the descriptor is open.
pub(crate) fn new_netns() -> OwnedFd {
    // unshare on a short-lived thread: only that thread moves, and the namespace lives on
    // through the descriptor alone, so nothing is left behind when it is closed.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        OwnedFd::from(File::open("/proc/thread-self/ns/net").unwrap())
    })
    .join()
    .unwrap()
}

pub(crate) fn pod(uid: &str) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        name: format!("pod-{uid}"),
        namespace: "default".into(),
        service_account: "default".into(),
    }
}

fn add(uid: &str, netns: OwnedFd) -> WorkloadMessage {
    WorkloadMessage::Add {
        pod: pod(uid),
        netns,
    }
}

fn registry() -> (Registry<Arc<FakeLauncher>>, Arc<FakeLauncher>) {
    let launcher = Arc::new(FakeLauncher::default());
    let registry = Registry::new(launcher.clone(), Duration::from_secs(5));
    (registry, launcher)
}

/// Lets the background drain tasks run.
async fn settle(registry: &mut Registry<Arc<FakeLauncher>>) {
    while registry.draining.join_next().await.is_some() {}
}

/// Runs one connection's snapshot: the given messages, then SnapshotSent.
async fn snapshot(registry: &mut Registry<Arc<FakeLauncher>>, messages: Vec<WorkloadMessage>) {
    registry.connection_started();
    for m in messages {
        registry.process(m).await.unwrap();
    }
    registry
        .process(WorkloadMessage::SnapshotSent)
        .await
        .unwrap();
}

#[tokio::test]
async fn add_is_idempotent_in_the_same_namespace() {
    let (mut registry, launcher) = registry();
    let ns = new_netns();
    let again = ns.try_clone().unwrap();
    snapshot(&mut registry, vec![add("a", ns), add("a", again)]).await;
    assert_eq!(launcher.take_events(), ["start a #0"]);
    assert!(registry.ready());
}

#[tokio::test]
async fn add_in_a_new_namespace_replaces_the_proxy() {
    let (mut registry, launcher) = registry();
    snapshot(&mut registry, vec![add("a", new_netns())]).await;
    registry.process(add("a", new_netns())).await.unwrap();
    settle(&mut registry).await;
    // The old proxy drains in the background while the new one serves.
    let mut events = launcher.take_events();
    events.sort();
    assert_eq!(events, ["drain a #0 5s", "start a #0", "start a #1"]);
}

#[tokio::test]
async fn del_drains_and_unknown_del_is_fine() {
    let (mut registry, launcher) = registry();
    snapshot(&mut registry, vec![add("a", current_netns())]).await;
    registry
        .process(WorkloadMessage::Del("a".into()))
        .await
        .unwrap();
    registry
        .process(WorkloadMessage::Del("never-seen".into()))
        .await
        .unwrap();
    settle(&mut registry).await;
    assert_eq!(launcher.take_events(), ["start a #0", "drain a #0 5s"]);
    let dump = registry.dump_fn()();
    assert_eq!(dump["workloadState"], json!({}));
}

#[tokio::test]
async fn snapshot_after_reconnect_drains_only_pods_not_sent() {
    let (mut registry, launcher) = registry();
    let ns_a = new_netns();
    let ns_a_again = ns_a.try_clone().unwrap();
    snapshot(
        &mut registry,
        vec![add("a", ns_a), add("b", new_netns()), add("c", new_netns())],
    )
    .await;
    registry.connection_ended();
    launcher.take_events();

    // The agent restarted: it re-sends a, keeps b, and c is gone.
    snapshot(
        &mut registry,
        vec![add("a", ns_a_again), WorkloadMessage::Keep("b".into())],
    )
    .await;
    settle(&mut registry).await;
    assert_eq!(launcher.take_events(), ["drain c #2 5s"]);
    let dump = registry.dump_fn()();
    let uids: Vec<&String> = dump["workloadState"].as_object().unwrap().keys().collect();
    assert_eq!(uids, ["a", "b"]);
}

#[tokio::test]
async fn order_violations_are_protocol_errors() {
    let (mut registry, _launcher) = registry();
    registry.connection_started();
    assert!(matches!(
        registry.process(WorkloadMessage::Del("a".into())).await,
        Err(InpodError::Protocol(_))
    ));
    registry
        .process(WorkloadMessage::SnapshotSent)
        .await
        .unwrap();
    assert!(matches!(
        registry.process(WorkloadMessage::SnapshotSent).await,
        Err(InpodError::Protocol(_))
    ));
    assert!(matches!(
        registry.process(WorkloadMessage::Keep("a".into())).await,
        Err(InpodError::Protocol(_))
    ));
}

#[tokio::test]
async fn failed_start_blocks_readiness_until_a_retry_succeeds() {
    let (mut registry, launcher) = registry();
    lock(&launcher.failing).insert("a".into());
    registry.connection_started();
    let result = registry.process(add("a", new_netns())).await;
    assert!(
        matches!(&result, Err(InpodError::Start { uid, reason }) if uid == "a" && reason == "address in use"),
        "{result:?}"
    );
    registry
        .process(WorkloadMessage::SnapshotSent)
        .await
        .unwrap();
    assert!(!registry.ready());
    assert_eq!(
        registry.dump_fn()()["workloadState"]["a"]["state"],
        "Pending"
    );

    registry.retry_pending().await;
    assert!(registry.has_pending(), "still failing");
    lock(&launcher.failing).clear();
    registry.retry_pending().await;
    assert!(registry.ready());
    assert_eq!(launcher.take_events(), ["fail a", "fail a", "start a #0"]);
    assert_eq!(registry.dump_fn()()["workloadState"]["a"]["state"], "Up");
}

#[tokio::test]
async fn a_new_connection_forgets_pending_pods() {
    let (mut registry, launcher) = registry();
    lock(&launcher.failing).insert("a".into());
    registry.connection_started();
    assert!(registry.process(add("a", new_netns())).await.is_err());
    assert!(registry.has_pending());
    registry.connection_ended();
    registry.connection_started();
    assert!(!registry.has_pending());
}

#[tokio::test]
async fn drain_all_drains_every_pod_with_the_deadline() {
    let (mut registry, launcher) = registry();
    snapshot(
        &mut registry,
        vec![add("a", new_netns()), add("b", new_netns())],
    )
    .await;
    registry
        .process(WorkloadMessage::Del("a".into()))
        .await
        .unwrap();
    registry.drain_all(Duration::from_secs(30)).await;
    let mut events = launcher.take_events();
    events.sort();
    assert_eq!(
        events,
        [
            "drain a #0 5s",
            "drain b #1 30s",
            "start a #0",
            "start b #1"
        ]
    );
}

#[tokio::test]
async fn dump_lists_pods_and_connection_state() {
    let (mut registry, _launcher) = registry();
    let dump = registry.dump_fn();
    assert_eq!(dump()["zds"]["connected"], false);
    snapshot(&mut registry, vec![add("a", current_netns())]).await;
    let value = dump();
    assert_eq!(
        value["zds"],
        json!({"connected": true, "snapshotReceived": true})
    );
    assert_eq!(
        value["workloadState"]["a"],
        json!({
            "state": "Up",
            "info": {"uid": "a", "name": "pod-a", "namespace": "default", "serviceAccount": "default"},
            "activeConnections": 0,
        })
    );
}
