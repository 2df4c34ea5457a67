//! The ZDS server: proxy sessions and the hub that feeds them.
//!
//! As istio-cni does it: a proxy connects and sends `ZdsHello`; once the agent's first
//! enrollment round is done, it gets the snapshot — an `Add` (with the namespace fd) for
//! every captured pod, a `Keep` for every enrolled pod whose namespace is not available yet
//! — then `SnapshotSent`, after which it may drop pods it serves that were not named. Changes
//! follow as they happen. Every message waits for the proxy's `Ack` before the next one goes
//! out; an `Ack` carrying an error is logged and the `Add` retried later, while a proxy that
//! does not answer within [`ACK_TIMEOUT`] is disconnected (it reconnects and gets a fresh
//! snapshot; a late answer could never be matched to its request).
//!
//! Several proxies may be connected during an overlapping upgrade: `Add` goes to the newest
//! only, `Del` to all, so the old proxy lets go of pods that leave the mesh while it drains;
//! if the newest leaves first (a successor that failed), every captured pod is sent again to
//! the one that is the newest now.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use api::zds::{
    AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, WorkloadInfo, WorkloadRequest,
    WorkloadResponse, ZdsHello, workload_request, workload_response,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::zds::{ZdsListener, ZdsStream};

/// How long the proxy has to send its hello and to acknowledge each message (Istio's value).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Most proxy connections served at once: the node's proxy and, during an upgrade, its
/// successor, with room for a reconnect racing the old connection's teardown.
const MAX_SESSIONS: usize = 4;

/// Changes queued for one proxy before the enrollment loop waits.
const SESSION_QUEUE: usize = 64;

/// A pod as the next snapshot will present it.
#[derive(Clone)]
struct SnapshotEntry {
    info: WorkloadInfo,
    /// The namespace when captured; `None` sends `Keep`.
    netns: Option<Arc<OwnedFd>>,
}

/// One message for one proxy, and where its outcome goes.
struct Update {
    request: WorkloadRequest,
    fd: Option<Arc<OwnedFd>>,
    reply: oneshot::Sender<Result<(), String>>,
}

struct SessionHandle {
    id: u64,
    tx: mpsc::Sender<Update>,
}

#[derive(Default)]
struct HubInner {
    snapshot: BTreeMap<String, SnapshotEntry>,
    /// Connected proxies in connection order; the last is the newest.
    sessions: Vec<SessionHandle>,
    /// Captured pods whose `Add` the newest proxy did not acknowledge.
    retry: BTreeSet<String>,
    next_id: u64,
}

/// What the agent tells proxies: the current snapshot and the connected sessions.
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    ready: watch::Sender<bool>,
}

impl Hub {
    pub(crate) fn new() -> Arc<Hub> {
        Arc::new(Hub {
            inner: Mutex::new(HubInner::default()),
            ready: watch::Sender::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // The data stays consistent across a panic elsewhere (every update is one statement).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first enrollment round is done: snapshots may go out.
    pub(crate) fn set_ready(&self) {
        self.ready.send_if_modified(|r| !std::mem::replace(r, true));
    }

    /// Whether the first enrollment round is done.
    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Whether a proxy is connected (an `Add` then reaches one and waits for its `Ack`).
    pub(crate) fn has_proxy(&self) -> bool {
        !self.lock().sessions.is_empty()
    }

    /// Records `uid` as captured and tells the newest proxy. Without a proxy this succeeds at
    /// once: the snapshot carries the pod when one connects.
    pub(crate) async fn add(
        &self,
        uid: &str,
        info: WorkloadInfo,
        netns: Arc<OwnedFd>,
    ) -> Result<(), String> {
        let target = {
            let mut inner = self.lock();
            inner.retry.remove(uid);
            inner.snapshot.insert(
                uid.to_string(),
                SnapshotEntry {
                    info: info.clone(),
                    netns: Some(netns.clone()),
                },
            );
            inner.sessions.last().map(|s| s.tx.clone())
        };
        let Some(tx) = target else {
            return Ok(());
        };
        let request = WorkloadRequest {
            payload: Some(workload_request::Payload::Add(AddWorkload {
                uid: uid.to_string(),
                workload_info: Some(info),
            })),
        };
        let result = deliver(&tx, request, Some(netns)).await;
        if result.is_err() {
            let mut inner = self.lock();
            if inner.snapshot.contains_key(uid) {
                inner.retry.insert(uid.to_string());
            }
        }
        result
    }

    /// Lists `uid` in snapshots as `Keep` unless it is captured.
    pub(crate) fn keep(&self, uid: &str, info: WorkloadInfo) {
        self.lock()
            .snapshot
            .entry(uid.to_string())
            .or_insert(SnapshotEntry { info, netns: None });
    }

    /// Forgets `uid` and tells every proxy to let go of it.
    pub(crate) async fn remove(&self, uid: &str) {
        let targets: Vec<mpsc::Sender<Update>> = {
            let mut inner = self.lock();
            inner.snapshot.remove(uid);
            inner.retry.remove(uid);
            inner.sessions.iter().map(|s| s.tx.clone()).collect()
        };
        for tx in targets {
            let request = WorkloadRequest {
                payload: Some(workload_request::Payload::Del(DelWorkload {
                    uid: uid.to_string(),
                })),
            };
            if let Err(e) = deliver(&tx, request, None).await {
                tracing::warn!(pod = %uid, "proxy did not take the removal: {e}");
            }
        }
    }

    /// Pods whose `Add` should be sent again.
    pub(crate) fn take_retries(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().retry).into_iter().collect()
    }

    /// Adds a session as the newest and returns the snapshot it must send first; both under
    /// one lock, so every later change reaches it through its queue and none is missed.
    fn register(&self) -> (u64, mpsc::Receiver<Update>, Vec<(String, SnapshotEntry)>) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.sessions.push(SessionHandle { id, tx });
        let snapshot = inner
            .snapshot
            .iter()
            .map(|(uid, e)| (uid.clone(), e.clone()))
            .collect();
        (id, rx, snapshot)
    }

    fn unregister(&self, id: u64) {
        let mut inner = self.lock();
        let was_newest = inner.sessions.last().is_some_and(|s| s.id == id);
        inner.sessions.retain(|s| s.id != id);
        // An older proxy is the newest again (a successor that failed to take over): pods
        // added while it was not were never sent to it, so every captured pod goes again (an
        // `Add` of a pod it serves in the same namespace keeps that pod's proxy as it is).
        if was_newest && !inner.sessions.is_empty() {
            let captured: Vec<String> = inner
                .snapshot
                .iter()
                .filter(|(_, e)| e.netns.is_some())
                .map(|(uid, _)| uid.clone())
                .collect();
            inner.retry.extend(captured);
        }
    }

    /// The snapshot as (uid, captured) pairs, for tests.
    #[cfg(test)]
    pub(crate) fn snapshot_view(&self) -> Vec<(String, bool)> {
        self.lock()
            .snapshot
            .iter()
            .map(|(uid, e)| (uid.clone(), e.netns.is_some()))
            .collect()
    }

    fn mark_retry(&self, uid: &str) {
        let mut inner = self.lock();
        if inner.snapshot.get(uid).is_some_and(|e| e.netns.is_some()) {
            inner.retry.insert(uid.to_string());
        }
    }
}

/// Queues `request` for one session and waits for the proxy's answer.
async fn deliver(
    tx: &mpsc::Sender<Update>,
    request: WorkloadRequest,
    fd: Option<Arc<OwnedFd>>,
) -> Result<(), String> {
    let (reply, answer) = oneshot::channel();
    tx.send(Update { request, fd, reply })
        .await
        .map_err(|_| "proxy disconnected".to_string())?;
    answer.await.map_err(|_| "proxy disconnected".to_string())?
}

/// Accepts proxies until `shutdown`, serving each in its own task.
pub(crate) async fn serve_sessions(
    listener: ZdsListener,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    while sessions.try_join_next().is_some() {}
                    if sessions.len() >= MAX_SESSIONS {
                        tracing::warn!("refusing a ZDS connection: {MAX_SESSIONS} already open");
                        continue;
                    }
                    tracing::info!("proxy connected");
                    sessions.spawn(session(hub.clone(), stream, shutdown.clone()));
                }
                Err(e) => {
                    // Typically out of descriptors: pause instead of spinning.
                    tracing::warn!("accepting a ZDS connection: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    sessions.shutdown().await;
}

/// Serves one proxy connection to its end.
async fn session(hub: Arc<Hub>, stream: ZdsStream, mut shutdown: watch::Receiver<bool>) {
    match tokio::time::timeout(ACK_TIMEOUT, stream.recv::<ZdsHello>()).await {
        Ok(Ok((hello, _))) => tracing::info!(version = hello.version, "proxy said hello"),
        Ok(Err(e)) => {
            tracing::warn!("reading the proxy's hello: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("the proxy sent no hello within {ACK_TIMEOUT:?}");
            return;
        }
    }
    let mut ready = hub.ready.subscribe();
    tokio::select! {
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
        _ = shutdown.changed() => return,
    }
    let (id, rx, snapshot) = hub.register();
    match converse(&hub, &stream, rx, snapshot, &mut shutdown).await {
        Ok(()) => tracing::info!("proxy session ended"),
        Err(e) => tracing::warn!("proxy session failed: {e}"),
    }
    hub.unregister(id);
}

async fn converse(
    hub: &Hub,
    stream: &ZdsStream,
    mut rx: mpsc::Receiver<Update>,
    snapshot: Vec<(String, SnapshotEntry)>,
    shutdown: &mut watch::Receiver<bool>,
) -> io::Result<()> {
    for (uid, entry) in snapshot {
        let (payload, fd) = match entry.netns {
            Some(fd) => (
                workload_request::Payload::Add(AddWorkload {
                    uid: uid.clone(),
                    workload_info: Some(entry.info),
                }),
                Some(fd),
            ),
            None => (
                workload_request::Payload::Keep(KeepWorkload { uid: uid.clone() }),
                None,
            ),
        };
        let request = WorkloadRequest {
            payload: Some(payload),
        };
        if let Err(e) = exchange(stream, &request, fd.as_deref()).await? {
            tracing::warn!(pod = %uid, "proxy refused the pod in the snapshot: {e}");
            hub.mark_retry(&uid);
        }
    }
    let done = WorkloadRequest {
        payload: Some(workload_request::Payload::SnapshotSent(SnapshotSent {})),
    };
    if let Err(e) = exchange(stream, &done, None).await? {
        tracing::warn!("proxy refused the end of the snapshot: {e}");
    }
    loop {
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else { return Ok(()) };
                match exchange(stream, &update.request, update.fd.as_deref()).await {
                    Ok(answer) => {
                        let _ = update.reply.send(answer);
                    }
                    Err(e) => {
                        let _ = update.reply.send(Err(e.to_string()));
                        return Err(e);
                    }
                }
            }
            // The proxy speaks only when spoken to: anything now is a close or an error.
            unsolicited = stream.recv::<WorkloadResponse>() => {
                return match unsolicited {
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
                    Err(e) => Err(e),
                    Ok(_) => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "proxy sent a message nobody asked for",
                    )),
                };
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// Sends one request and reads its `Ack`: the outer error is a broken connection, the
/// inner one the proxy's refusal.
async fn exchange(
    stream: &ZdsStream,
    request: &WorkloadRequest,
    fd: Option<&OwnedFd>,
) -> io::Result<Result<(), String>> {
    let talk = async {
        stream.send(request, fd.map(|f| f.as_fd())).await?;
        let (response, _stray_fd) = stream.recv::<WorkloadResponse>().await?;
        match response.payload {
            Some(workload_response::Payload::Ack(ack)) if ack.error.is_empty() => Ok(Ok(())),
            Some(workload_response::Payload::Ack(ack)) => Ok(Err(ack.error)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "proxy answered without an ack",
            )),
        }
    };
    match tokio::time::timeout(ACK_TIMEOUT, talk).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no ack within {ACK_TIMEOUT:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::zds::Ack;

    fn info(name: &str) -> WorkloadInfo {
        WorkloadInfo {
            name: name.into(),
            namespace: "ns".into(),
            service_account: "sa".into(),
        }
    }

    fn fd() -> Arc<OwnedFd> {
        Arc::new(OwnedFd::from(
            std::fs::File::open("/proc/self/ns/net").unwrap(),
        ))
    }

    /// The proxy side of a session over a socketpair.
    struct FakeProxy(ZdsStream);

    impl FakeProxy {
        async fn start(hub: &Arc<Hub>) -> (FakeProxy, tokio::task::JoinHandle<()>) {
            let (agent, proxy) = ZdsStream::pair().unwrap();
            let (shutdown_tx, shutdown) = watch::channel(false);
            let task = tokio::spawn({
                let hub = hub.clone();
                async move {
                    // Held so the session never sees its shutdown sender vanish.
                    let _shutdown_tx = shutdown_tx;
                    session(hub, agent, shutdown).await
                }
            });
            proxy
                .send(
                    &ZdsHello {
                        version: api::zds::Version::V1 as i32,
                    },
                    None,
                )
                .await
                .unwrap();
            (FakeProxy(proxy), task)
        }

        async fn next(&self, answer: &str) -> (workload_request::Payload, bool) {
            let (req, fd): (WorkloadRequest, _) = self.0.recv().await.unwrap();
            let ack = WorkloadResponse {
                payload: Some(workload_response::Payload::Ack(Ack {
                    error: answer.into(),
                })),
            };
            self.0.send(&ack, None).await.unwrap();
            (req.payload.unwrap(), fd.is_some())
        }
    }

    #[tokio::test]
    async fn snapshot_then_changes_in_order() {
        let hub = Hub::new();
        hub.add("a", info("a"), fd()).await.unwrap(); // no proxy yet: snapshot only
        hub.keep("k", info("k"));
        hub.set_ready();
        let (proxy, _task) = FakeProxy::start(&hub).await;

        let (p, has_fd) = proxy.next("").await;
        assert!(matches!(p, workload_request::Payload::Add(ref a) if a.uid == "a"));
        assert!(has_fd);
        let (p, has_fd) = proxy.next("").await;
        assert!(matches!(p, workload_request::Payload::Keep(ref k) if k.uid == "k"));
        assert!(!has_fd);
        let (p, _) = proxy.next("").await;
        assert!(matches!(p, workload_request::Payload::SnapshotSent(_)));

        let hub2 = hub.clone();
        let del = tokio::spawn(async move { hub2.remove("a").await });
        let (p, _) = proxy.next("").await;
        assert!(matches!(p, workload_request::Payload::Del(ref d) if d.uid == "a"));
        del.await.unwrap();
    }

    #[tokio::test]
    async fn refused_adds_are_queued_for_retry() {
        let hub = Hub::new();
        hub.set_ready();
        let (proxy, _task) = FakeProxy::start(&hub).await;
        let (p, _) = proxy.next("").await;
        assert!(matches!(p, workload_request::Payload::SnapshotSent(_)));

        let hub2 = hub.clone();
        let add = tokio::spawn(async move { hub2.add("b", info("b"), fd()).await });
        let (p, _) = proxy.next("no room").await;
        assert!(matches!(p, workload_request::Payload::Add(_)));
        assert_eq!(add.await.unwrap(), Err("no room".to_string()));
        assert_eq!(hub.take_retries(), ["b".to_string()]);
        assert!(hub.take_retries().is_empty());
    }

    /// Two proxies connected in turn, and pod `c` added since the second one connected.
    struct Overlap {
        hub: Arc<Hub>,
        old: FakeProxy,
        new: FakeProxy,
        new_session: tokio::task::JoinHandle<()>,
        _old_session: tokio::task::JoinHandle<()>,
    }

    async fn overlap_with_c_added() -> Overlap {
        let hub = Hub::new();
        hub.set_ready();
        let mut sessions = Vec::new();
        let mut proxies = Vec::new();
        for _ in 0..2 {
            let (proxy, session) = FakeProxy::start(&hub).await;
            assert!(matches!(
                proxy.next("").await.0,
                workload_request::Payload::SnapshotSent(_)
            ));
            proxies.push(proxy);
            sessions.push(session);
        }
        let (new, old) = (proxies.pop().unwrap(), proxies.pop().unwrap());
        let hub2 = hub.clone();
        let add = tokio::spawn(async move { hub2.add("c", info("c"), fd()).await });
        assert!(matches!(
            new.next("").await.0,
            workload_request::Payload::Add(_)
        ));
        add.await.unwrap().unwrap();
        let (new_session, old_session) = (sessions.pop().unwrap(), sessions.pop().unwrap());
        Overlap {
            hub,
            old,
            new,
            new_session,
            _old_session: old_session,
        }
    }

    #[tokio::test]
    async fn adds_go_to_the_newest_proxy_and_deletes_to_all() {
        let Overlap { hub, old, new, .. } = overlap_with_c_added().await;
        let hub2 = hub.clone();
        let del = tokio::spawn(async move { hub2.remove("c").await });
        assert!(matches!(
            old.next("").await.0,
            workload_request::Payload::Del(_)
        ));
        assert!(matches!(
            new.next("").await.0,
            workload_request::Payload::Del(_)
        ));
        del.await.unwrap();
    }

    #[tokio::test]
    async fn pods_are_sent_again_to_an_older_proxy_when_the_newest_leaves() {
        // The old proxy stays connected (bound, not dropped).
        let Overlap {
            hub,
            old: _old,
            new,
            new_session,
            ..
        } = overlap_with_c_added().await;
        assert!(hub.take_retries().is_empty(), "the newest took it");

        drop(new);
        new_session.await.unwrap();
        assert_eq!(
            hub.take_retries(),
            ["c".to_string()],
            "the old one never got it"
        );
    }

    #[tokio::test]
    async fn a_closed_proxy_ends_its_session() {
        let hub = Hub::new();
        hub.set_ready();
        let (proxy, task) = FakeProxy::start(&hub).await;
        assert!(matches!(
            proxy.next("").await.0,
            workload_request::Payload::SnapshotSent(_)
        ));
        drop(proxy);
        task.await.unwrap();
        assert!(hub.lock().sessions.is_empty());
        // With nobody connected, changes only update the snapshot.
        hub.add("d", info("d"), fd()).await.unwrap();
    }
}
