//! The pods this proxy serves and the ZDS state machine around them: idempotent adds, drains
//! on delete, snapshot reconciliation per connection, retries of proxies that failed to start.

use std::collections::{BTreeMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::error::InpodError;
use super::pod::{Launcher, PodInfo};
use super::protocol::WorkloadMessage;
use crate::proxy::PodNetns;
use crate::proxy::netns::NsId;

enum PodState<P> {
    /// Serving.
    Up(P),
    /// Failed to start with this error; retried later.
    Pending(String),
}

struct Pod<P> {
    info: PodInfo,
    netns_id: NsId,
    netns: Arc<PodNetns>,
    state: PodState<P>,
}

/// What the admin dump reads, shared with the endpoint's thread.
struct Table<P> {
    pods: BTreeMap<String, Pod<P>>,
    /// Pods whose proxy is draining, by uid (a uid can drain twice when its netns changed).
    draining: BTreeMap<String, usize>,
    connected: bool,
    snapshot_received: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still worth reading.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The pod registry; driven by one ZDS connection at a time.
pub(crate) struct Registry<L: Launcher> {
    launcher: Arc<L>,
    table: Arc<Mutex<Table<L::Proxy>>>,
    draining: JoinSet<()>,
    del_deadline: Duration,
    /// Per connection: whether `SnapshotSent` arrived, and the uids added or kept before it.
    snapshot_received: bool,
    seen: HashSet<String>,
}

impl<L: Launcher> Registry<L> {
    /// An empty registry; deleted pods get `del_deadline` to finish their connections.
    pub(crate) fn new(launcher: L, del_deadline: Duration) -> Self {
        Registry {
            launcher: Arc::new(launcher),
            table: Arc::new(Mutex::new(Table {
                pods: BTreeMap::new(),
                draining: BTreeMap::new(),
                connected: false,
                snapshot_received: false,
            })),
            draining: JoinSet::new(),
            del_deadline,
            snapshot_received: false,
            seen: HashSet::new(),
        }
    }

    /// A new connection begins: a new snapshot follows. Pods that failed to start are forgotten,
    /// since the agent sends them again.
    pub(crate) fn connection_started(&mut self) {
        self.snapshot_received = false;
        self.seen.clear();
        let mut table = lock(&self.table);
        table.connected = true;
        table.snapshot_received = false;
        table
            .pods
            .retain(|_, pod| matches!(pod.state, PodState::Up(_)));
    }

    /// The connection is gone; running pods stay.
    pub(crate) fn connection_ended(&mut self) {
        lock(&self.table).connected = false;
    }

    /// Whether the snapshot of this connection is complete and every pod is served.
    pub(crate) fn ready(&self) -> bool {
        self.snapshot_received && !self.has_pending()
    }

    /// Whether some pod's proxy failed to start and awaits a retry.
    pub(crate) fn has_pending(&self) -> bool {
        lock(&self.table)
            .pods
            .values()
            .any(|pod| matches!(pod.state, PodState::Pending(_)))
    }

    /// Applies one request.
    pub(crate) async fn process(&mut self, message: WorkloadMessage) -> Result<(), InpodError> {
        match message {
            WorkloadMessage::Add { pod, netns } => {
                if !self.snapshot_received {
                    self.seen.insert(pod.uid.clone());
                }
                self.add(pod, netns).await
            }
            WorkloadMessage::Keep(uid) => {
                if self.snapshot_received {
                    return Err(InpodError::Protocol(format!(
                        "KeepWorkload {uid} after the snapshot"
                    )));
                }
                self.seen.insert(uid);
                Ok(())
            }
            WorkloadMessage::Del(uid) => {
                if !self.snapshot_received {
                    return Err(InpodError::Protocol(format!(
                        "DelWorkload {uid} before the snapshot"
                    )));
                }
                tracing::info!(uid, "pod deleted, draining its proxy");
                let removed = lock(&self.table).pods.remove(&uid);
                if let Some(pod) = removed {
                    self.retire(pod);
                }
                Ok(())
            }
            WorkloadMessage::SnapshotSent => {
                if self.snapshot_received {
                    return Err(InpodError::Protocol("second SnapshotSent".into()));
                }
                self.reconcile();
                Ok(())
            }
        }
    }

    async fn add(&mut self, info: PodInfo, fd: OwnedFd) -> Result<(), InpodError> {
        let uid = info.uid.clone();
        let netns_id = NsId::of(&fd).map_err(|e| InpodError::Start {
            uid: uid.clone(),
            reason: format!("reading the network namespace descriptor: {e}"),
        })?;
        let replaced = {
            let mut table = lock(&self.table);
            match table.pods.get(&uid) {
                Some(pod) if pod.netns_id == netns_id && matches!(pod.state, PodState::Up(_)) => {
                    tracing::debug!(uid, "pod already served in this network namespace");
                    return Ok(());
                }
                Some(_) => table.pods.remove(&uid),
                None => None,
            }
        };
        if let Some(old) = replaced {
            if old.netns_id != netns_id {
                // The pod sandbox was recreated with a fresh namespace: the old listeners are
                // of no use any more.
                tracing::info!(uid, "pod has a new network namespace, replacing its proxy");
            }
            self.retire(old);
        }
        tracing::info!(uid, pod = %info.name, namespace = %info.namespace, "starting pod proxy");
        self.start(info, netns_id, Arc::new(PodNetns::new(fd)))
            .await
    }

    async fn start(
        &mut self,
        info: PodInfo,
        netns_id: NsId,
        netns: Arc<PodNetns>,
    ) -> Result<(), InpodError> {
        let result = self.launcher.start(&info, netns.clone()).await;
        let uid = info.uid.clone();
        let (state, outcome) = match result {
            Ok(proxy) => (PodState::Up(proxy), Ok(())),
            Err(reason) => {
                tracing::warn!(uid, "pod proxy failed to start: {reason}");
                (
                    PodState::Pending(reason.clone()),
                    Err(InpodError::Start {
                        uid: uid.clone(),
                        reason,
                    }),
                )
            }
        };
        lock(&self.table).pods.insert(
            uid,
            Pod {
                info,
                netns_id,
                netns,
                state,
            },
        );
        outcome
    }

    /// Drains pods neither added nor kept during this connection's snapshot.
    fn reconcile(&mut self) {
        let gone: Vec<Pod<L::Proxy>> = {
            let mut table = lock(&self.table);
            let uids: Vec<String> = table
                .pods
                .keys()
                .filter(|uid| !self.seen.contains(*uid))
                .cloned()
                .collect();
            table.snapshot_received = true;
            uids.iter()
                .filter_map(|uid| table.pods.remove(uid))
                .collect()
        };
        for pod in gone {
            tracing::info!(uid = %pod.info.uid, "pod missing from the snapshot, draining its proxy");
            self.retire(pod);
        }
        self.seen.clear();
        self.snapshot_received = true;
    }

    /// Drains a pod's proxy in the background, so the agent's request is answered at once.
    fn retire(&mut self, pod: Pod<L::Proxy>) {
        // Forget drains that finished, so the set stays as small as the work in progress.
        while self.draining.try_join_next().is_some() {}
        let PodState::Up(proxy) = pod.state else {
            return;
        };
        let uid = pod.info.uid.clone();
        *lock(&self.table).draining.entry(uid.clone()).or_default() += 1;
        let launcher = self.launcher.clone();
        let table = self.table.clone();
        let deadline = self.del_deadline;
        self.draining.spawn(async move {
            launcher.drain(&pod.info, proxy, deadline).await;
            tracing::info!(uid, "pod proxy drained");
            let mut table = lock(&table);
            if let Some(count) = table.draining.get_mut(&uid) {
                *count -= 1;
                if *count == 0 {
                    table.draining.remove(&uid);
                }
            }
        });
    }

    /// Tries again to start the proxies that failed.
    pub(crate) async fn retry_pending(&mut self) {
        let pending: Vec<Pod<L::Proxy>> = {
            let mut table = lock(&self.table);
            let uids: Vec<String> = table
                .pods
                .iter()
                .filter(|(_, pod)| matches!(pod.state, PodState::Pending(_)))
                .map(|(uid, _)| uid.clone())
                .collect();
            uids.iter()
                .filter_map(|uid| table.pods.remove(uid))
                .collect()
        };
        for pod in pending {
            tracing::info!(uid = %pod.info.uid, "retrying pod proxy");
            // A failure is recorded as pending again; the caller schedules the next retry.
            let _ = self.start(pod.info, pod.netns_id, pod.netns).await;
        }
    }

    /// Drains every pod at once with `deadline`, and waits for drains already under way.
    pub(crate) async fn drain_all(mut self, deadline: Duration) {
        let pods: Vec<Pod<L::Proxy>> = {
            let mut table = lock(&self.table);
            std::mem::take(&mut table.pods).into_values().collect()
        };
        self.del_deadline = deadline;
        for pod in pods {
            self.retire(pod);
        }
        while let Some(done) = self.draining.join_next().await {
            if let Err(e) = done {
                tracing::error!("draining a pod proxy failed: {e}");
            }
        }
    }

    /// A JSON view of the pods for `/config_dump`.
    pub(crate) fn dump_fn(&self) -> Arc<dyn Fn() -> Value + Send + Sync> {
        let table = self.table.clone();
        let launcher = self.launcher.clone();
        Arc::new(move || {
            let table = lock(&table);
            let pods: serde_json::Map<String, Value> = table
                .pods
                .iter()
                .map(|(uid, pod)| {
                    let state = match &pod.state {
                        PodState::Up(proxy) => json!({
                            "state": "Up",
                            "info": pod.info,
                            "activeConnections": launcher.active_connections(proxy),
                        }),
                        PodState::Pending(error) => json!({
                            "state": "Pending",
                            "info": pod.info,
                            "error": error,
                        }),
                    };
                    (uid.clone(), state)
                })
                .collect();
            json!({
                "workloadState": pods,
                "draining": table.draining,
                "zds": {
                    "connected": table.connected,
                    "snapshotReceived": table.snapshot_received,
                },
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
