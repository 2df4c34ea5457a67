//! The agent's CNI socket: one [`Request`] and one [`Answer`] per connection, from the
//! chained CNI plugin the runtime runs for each pod sandbox.
//!
//! `Add` waits (bounded by [`POD_WAIT`]) for the pod to appear among this node's pods — the
//! controller publishes a scheduled pod before it has an IP — then answers at once for a pod
//! outside the mesh, or hands the capture to the enrollment loop and answers with its
//! outcome. Anything that keeps a mesh pod from being captured is an error: the runtime
//! then tears the sandbox down and tries again, so a mesh pod never runs uncaptured.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use super::protocol::{Answer, Command, MAX_MESSAGE, Request};
use crate::agent::enrollment::CniEvent;
use crate::agent::metrics::AgentMetrics;
use crate::agent::pod::NodePod;

/// This node's pods, `None` until the agent first synced (the agent's `PodFeed`).
type PodFeed = watch::Receiver<Option<Vec<NodePod>>>;

/// How long `Add` waits for the controller to list the pod on this node.
pub const POD_WAIT: Duration = Duration::from_secs(10);

/// How long the enrollment loop may take over one event (a round in progress, the rules,
/// the proxy's `Ack`).
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// How long a client has to send its request.
const READ_WAIT: Duration = Duration::from_secs(5);

/// Requests served at once (pods created together on one node).
const MAX_CONCURRENT: usize = 64;

/// Binds the CNI socket at `path`, replacing a stale one, readable by root only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the CNI socket until `shutdown`, passing captures to the enrollment loop.
pub(crate) async fn serve(
    listener: UnixListener,
    feed: PodFeed,
    events: mpsc::Sender<CniEvent>,
    metrics: Arc<AgentMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        metrics.cni_requests_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("refusing a CNI request: {MAX_CONCURRENT} in progress");
                        continue;
                    };
                    let feed = feed.clone();
                    let events = events.clone();
                    tokio::spawn(async move {
                        connection(stream, feed, events).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!("accepting a CNI connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(mut stream: UnixStream, feed: PodFeed, events: mpsc::Sender<CniEvent>) {
    let answer = match read_request(&mut stream).await {
        Ok(request) => {
            tracing::debug!(command = ?request.command, pod = %format!("{}/{}", request.namespace, request.name), "CNI request");
            handle(request, feed, &events).await
        }
        Err(e) => Answer::failed(format!("reading the request: {e}")),
    };
    let mut text = serde_json::to_vec(&answer).unwrap_or_default();
    text.push(b'\n');
    if let Err(e) = stream.write_all(&text).await {
        tracing::debug!("answering the CNI plugin: {e}");
    }
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut UnixStream) -> std::io::Result<Request> {
    let mut text = Vec::new();
    let mut limited = stream.take(MAX_MESSAGE);
    tokio::time::timeout(READ_WAIT, limited.read_to_end(&mut text))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request in time"))??;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

async fn handle(request: Request, mut feed: PodFeed, events: &mpsc::Sender<CniEvent>) -> Answer {
    if request.namespace.is_empty() || request.name.is_empty() {
        return Answer::failed("K8S_POD_NAMESPACE and K8S_POD_NAME are required in CNI_ARGS");
    }
    let key = format!("{}/{}", request.namespace, request.name);
    match request.command {
        Command::Add => {
            if request.netns.is_empty() {
                return Answer::failed("CNI_NETNS is required for ADD");
            }
            let start = tokio::time::Instant::now();
            let Some(pod) = wait_for_pod(&mut feed, &request.namespace, &request.name).await else {
                return Answer::failed(format!(
                    "pod {key} is not known on this node after {}s (is the controller reachable?)",
                    POD_WAIT.as_secs()
                ));
            };
            let listed = start.elapsed();
            if !pod.enrolled {
                return Answer::ok(false);
            }
            let outcome = ask(events, |reply| CniEvent::Add {
                pod,
                netns: PathBuf::from(&request.netns),
                ips: request.ips,
                container_id: request.container_id,
                reply,
            })
            .await;
            // How long the pod waited for the controller to list it, and the whole capture.
            tracing::info!(
                pod = %key,
                listed_ms = listed.as_millis() as u64,
                total_ms = start.elapsed().as_millis() as u64,
                ok = matches!(outcome, Ok(Ok(()))),
                "CNI add answered"
            );
            match outcome {
                Ok(Ok(())) => Answer::ok(true),
                Ok(Err(e)) | Err(e) => Answer::failed(format!("capturing pod {key}: {e}")),
            }
        }
        Command::Del => {
            let uid = find(&feed, &request.namespace, &request.name).map(|p| p.uid);
            let done = ask(events, |reply| CniEvent::Del {
                uid,
                namespace: request.namespace,
                name: request.name,
                container_id: request.container_id,
                reply,
            })
            .await;
            match done {
                Ok(()) => Answer::ok(false),
                Err(e) => Answer::failed(e),
            }
        }
        Command::Check => {
            let Some(pod) = find(&feed, &request.namespace, &request.name) else {
                return Answer::failed(format!("pod {key} is not known on this node"));
            };
            if !pod.enrolled {
                return Answer::ok(false);
            }
            let uid = pod.uid;
            match ask(events, |reply| CniEvent::Check { uid, reply }).await {
                Ok(Ok(())) => Answer::ok(true),
                Ok(Err(e)) | Err(e) => Answer::failed(format!("pod {key}: {e}")),
            }
        }
    }
}

/// Sends the event made by `make` to the enrollment loop and waits (bounded) for its reply.
async fn ask<T>(
    events: &mpsc::Sender<CniEvent>,
    make: impl FnOnce(oneshot::Sender<T>) -> CniEvent,
) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        events
            .send(make(reply))
            .await
            .map_err(|_| "the node agent is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the node agent is stopping".to_string())
    };
    tokio::time::timeout(EVENT_WAIT, exchange)
        .await
        .map_err(|_| format!("the node agent did not act within {EVENT_WAIT:?}"))?
}

/// The pod `namespace/name` in the current view of this node's pods.
fn find(feed: &PodFeed, namespace: &str, name: &str) -> Option<NodePod> {
    feed.borrow()
        .as_ref()?
        .iter()
        .find(|p| p.namespace == namespace && p.name == name)
        .cloned()
}

/// [`find`], waiting up to [`POD_WAIT`] for the pod to appear.
async fn wait_for_pod(feed: &mut PodFeed, namespace: &str, name: &str) -> Option<NodePod> {
    let deadline = tokio::time::Instant::now() + POD_WAIT;
    loop {
        if let Some(pod) = find(feed, namespace, name) {
            return Some(pod);
        }
        tokio::select! {
            changed = feed.changed() => {
                if changed.is_err() {
                    return find(feed, namespace, name);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_past_the_cap_are_refused_and_counted() {
        let dir = test_support::TempDir::new("cni-cap");
        let path = dir.join("cni.sock");
        let listener = bind(&path).unwrap();
        // No pod is ever listed: every ADD waits, holding its slot.
        let (_feed_tx, feed) = watch::channel(Some(Vec::new()));
        let (events, _events_rx) = mpsc::channel(1);
        let metrics = Arc::new(AgentMetrics::default());
        let (_stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve(listener, feed, events, metrics.clone(), shutdown));
        let request = serde_json::to_vec(&Request {
            command: Command::Add,
            namespace: "shop".into(),
            name: "web".into(),
            container_id: "c".into(),
            netns: "/proc/self/ns/net".into(),
            ips: Vec::new(),
        })
        .unwrap();
        let mut waiting = Vec::new();
        for _ in 0..MAX_CONCURRENT {
            let mut stream = UnixStream::connect(&path).await.unwrap();
            stream.write_all(&request).await.unwrap();
            stream.shutdown().await.unwrap();
            waiting.push(stream);
        }
        // One more: closed without an answer (the plugin reports it, the runtime retries).
        let mut refused = UnixStream::connect(&path).await.unwrap();
        let mut answer = Vec::new();
        refused.read_to_end(&mut answer).await.unwrap();
        assert!(answer.is_empty(), "{answer:?}");
        assert_eq!(metrics.cni_requests_refused.load(Ordering::Relaxed), 1);
        assert!(
            metrics
                .render()
                .contains("ztunnel_node_agent_cni_requests_refused_total 1")
        );
        server.abort();
    }
}
