//! One delta ADS stream: reads the client's requests, follows snapshot changes and sends each
//! subscribed type its incremental updates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Status, Streaming};

use super::clients::ClientEntry;
use super::delta::{self, Delta, Subscription};
use crate::translate::{Published, Snapshot};

/// What the stream sends the client: responses, or a final error.
pub(crate) type Outbound = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// Per-type state of one client.
#[derive(Debug, Default)]
struct TypeState {
    subscription: Subscription,
    /// What the client holds: name → version.
    known: BTreeMap<String, String>,
    /// The nonce and system version of the last response sent for this type.
    last_sent: Option<(String, String)>,
}

/// A stream in progress.
pub(crate) struct Stream {
    /// `node.id` of the client, once it told us (for logs).
    node: String,
    /// The identity the client authenticated as (for logs).
    identity: String,
    /// Its entry among the connected clients: what it was sent, ACKed and NACKed.
    entry: ClientEntry,
    types: BTreeMap<String, TypeState>,
    /// The snapshot the client's state is being brought to.
    current: Arc<Snapshot>,
    out: Outbound,
}

/// Why a stream ended.
enum End {
    /// The client went away or the controller is shutting down.
    Closed,
}

impl Stream {
    /// Serves one stream until the client leaves or the snapshot sender is dropped.
    ///
    /// Nothing is read or answered before the first complete snapshot is published: a
    /// reconnecting client's `initial_resource_versions` compared with an empty configuration
    /// would read as "remove everything".
    pub(crate) async fn run(
        entry: ClientEntry,
        identity: String,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        mut snapshots: watch::Receiver<Published>,
        out: Outbound,
        debounce: Duration,
    ) {
        let Some(current) = first_snapshot(&mut snapshots).await else {
            return;
        };
        let mut stream = Stream {
            node: String::new(),
            identity,
            entry,
            types: BTreeMap::new(),
            current,
            out,
        };
        // When set, a snapshot change was seen at that instant and will be pushed once the
        // debounce window has passed; later changes in the window are coalesced into it.
        let mut pending: Option<Instant> = None;
        loop {
            let deadline = pending.map(|since| since + debounce);
            let result = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(request)) => stream.on_request(request).await,
                    Ok(None) => Err(End::Closed),
                    Err(status) => {
                        tracing::debug!(node = %stream.node, %status, "xDS stream error");
                        Err(End::Closed)
                    }
                },
                changed = snapshots.changed(), if pending.is_none() => match changed {
                    Ok(()) => {
                        pending = Some(Instant::now());
                        Ok(())
                    }
                    // The sender is gone: the controller is shutting down.
                    Err(_) => Err(End::Closed),
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    let since = pending.take().unwrap_or_else(Instant::now);
                    // Once published, a snapshot is only ever replaced by another.
                    let latest = snapshots.borrow_and_update().clone();
                    match latest {
                        Some(latest) => stream.push_all(latest, since).await,
                        None => Ok(()),
                    }
                }
            };
            if let Err(End::Closed) = result {
                break;
            }
        }
        tracing::info!(node = %stream.node, identity = %stream.identity, "xDS client disconnected");
    }

    async fn on_request(&mut self, request: DeltaDiscoveryRequest) -> Result<(), End> {
        if self.node.is_empty()
            && let Some(node) = &request.node
            && !node.id.is_empty()
        {
            self.node = node.id.clone();
            self.entry.named(&self.node);
            tracing::info!(node = %self.node, identity = %self.identity, "xDS client connected");
        }
        let type_url = request.type_url;
        if type_url.is_empty() {
            // Aggregated streams must name the type; nothing sensible can be sent back.
            let _ = self
                .out
                .send(Err(Status::invalid_argument("type_url is required")))
                .await;
            return Err(End::Closed);
        }
        let first = !self.types.contains_key(&type_url);
        let state = self.types.entry(type_url.clone()).or_default();
        if !request.response_nonce.is_empty() {
            let nonce = &request.response_nonce;
            let version = match &state.last_sent {
                Some((sent, version)) if sent == nonce => Some(version),
                _ => None,
            };
            if let Some(version) = version.filter(|_| request.error_detail.is_none()) {
                self.entry.acked(&type_url, version);
            }
            if version.is_none() {
                tracing::debug!(node = %self.node, %type_url, %nonce, "ignoring stale nonce");
            } else if let Some(error) = &request.error_detail {
                self.entry.nacked(&type_url, &error.message);
                // The client keeps its previous config; we keep assuming it holds what we sent,
                // so the rejected version is not resent until the resource changes again.
                tracing::warn!(
                    node = %self.node, %type_url, %nonce, code = error.code,
                    error = %error.message, "xDS client rejected config (NACK)"
                );
                crate::metrics::global().xds.nacked(&type_url);
            } else {
                tracing::debug!(node = %self.node, %type_url, %nonce, "ACK");
            }
        }
        if first {
            state.known = request.initial_resource_versions.into_iter().collect();
        }
        let changes = !request.resource_names_subscribe.is_empty()
            || !request.resource_names_unsubscribe.is_empty();
        state.subscription.update(
            first,
            &request.resource_names_subscribe,
            &request.resource_names_unsubscribe,
        );
        if !first && !changes {
            return Ok(());
        }
        // The client forgets what it unsubscribed from; so do we.
        let subscription = state.subscription.clone();
        state.known.retain(|name, _| subscription.wants(name));
        // The first response is sent even when empty: it tells the client it is in sync.
        self.push_type(&type_url, first, Instant::now()).await
    }

    /// Brings every subscribed type up to `latest`.
    async fn push_all(&mut self, latest: Arc<Snapshot>, since: Instant) -> Result<(), End> {
        self.current = latest;
        let types: Vec<String> = self.types.keys().cloned().collect();
        for type_url in types {
            self.push_type(&type_url, false, since).await?;
        }
        Ok(())
    }

    /// Sends the delta of one type, if there is one (or always, with `force`).
    async fn push_type(&mut self, type_url: &str, force: bool, since: Instant) -> Result<(), End> {
        let Some(state) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let current = self.current.clone();
        let empty = BTreeMap::new();
        let resources = current.resources.get(type_url).unwrap_or(&empty);
        let delta = delta::compute(&state.known, &state.subscription, resources);
        if delta.is_empty() && !force {
            return Ok(());
        }
        let nonce = next_nonce();
        let version = current.system_version(type_url);
        let response = response(type_url, &delta, version.clone(), &nonce);
        delta::record(&mut state.known, &delta);
        self.entry.sent(type_url, &version);
        state.last_sent = Some((nonce.clone(), version));
        tracing::debug!(
            node = %self.node, %type_url, %nonce,
            upserts = delta.upserts.len(), removals = delta.removals.len(), "push"
        );
        if self.out.send(Ok(response)).await.is_err() {
            return Err(End::Closed);
        }
        crate::metrics::global()
            .xds
            .pushed(type_url, since.elapsed());
        Ok(())
    }
}

/// Waits for the first complete snapshot; `None` when the controller stops first.
async fn first_snapshot(snapshots: &mut watch::Receiver<Published>) -> Option<Arc<Snapshot>> {
    if snapshots.wait_for(Option::is_some).await.is_err() {
        return None;
    }
    snapshots.borrow().clone()
}

/// Builds the response carrying `delta`.
fn response(
    type_url: &str,
    delta: &Delta<'_>,
    system_version: String,
    nonce: &str,
) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: system_version,
        resources: delta
            .upserts
            .iter()
            .map(|(name, resource)| api::discovery::Resource {
                name: (*name).to_owned(),
                version: resource.version.clone(),
                resource: Some(resource.body.clone()),
                ..Default::default()
            })
            .collect(),
        type_url: type_url.to_owned(),
        removed_resources: delta.removals.clone(),
        nonce: nonce.to_owned(),
        ..Default::default()
    }
}

/// A nonce unique within this process and, thanks to the start-time prefix, across restarts.
fn next_nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
    });
    format!("{start:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed) + 1)
}

/// Sleeps until `deadline`, or forever without one (the branch is disabled then anyway).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
