//! The Kubernetes source: one watcher per [`WATCHED`] kind (and per [`REPORTED`] kind, which
//! the mesh does not read but tells users about) feeds a [`KubeState`], from which the
//! [`Index`] is published on the same channel the file source uses.
//!
//! Every object goes through the model's manifest parser
//! ([`crate::model::parse_documents`]), with origin
//! `kubernetes:<Kind>/<namespace>/<name>`, so the translation sees exactly
//! what it would see had the same objects been read from files.
//!
//! - The first index is published only once every kind has been listed:
//!   an index with pods but without their policies would open access that
//!   the policies close.
//! - A custom resource whose definition is not installed (404 on list) is
//!   logged once and counts as "no objects"; the list is retried slowly, and
//!   the other kinds are unaffected. Other errors are retried with backoff.
//! - Events are passed through a bounded queue and applied in batches, so a
//!   burst (a relist of thousands of pods) yields one index, not thousands.

mod convert;
pub mod kinds;
pub mod observed;
mod state;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;

pub use convert::origin;
pub use kinds::{REPORTED, StatusStyle, WATCHED, WatchedKind, all_watched};
pub use observed::{KUBERNETES_ORIGIN, Observed, ObservedMap};
pub use state::KubeState;

use crate::backoff::Backoff;
use crate::model::Index;

/// Tuning of the Kubernetes source.
#[derive(Clone, Debug)]
pub struct KubeSettings {
    /// How often a kind whose definition is not installed is listed again.
    pub missing_retry: Duration,
    /// Longest wait between retries of a failing watch.
    pub max_backoff: Duration,
    /// Capacity of the queue from the watchers to the state.
    pub queue: usize,
    /// Most events applied before an index is published.
    pub batch: usize,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            missing_retry: Duration::from_secs(60),
            max_backoff: Duration::from_secs(30),
            queue: 1024,
            batch: 4096,
        }
    }
}

/// One message from a watcher.
enum Update {
    // Boxed: a DynamicObject is large, and most queue slots hold one.
    Event(&'static WatchedKind, Box<watcher::Event<DynamicObject>>),
    Missing(&'static WatchedKind),
}

/// Watches the Kubernetes API and keeps an [`Index`] of what it holds.
pub struct KubeSource {
    client: kube::Client,
    settings: KubeSettings,
}

impl KubeSource {
    /// A source reading through `client`.
    pub fn new(client: kube::Client, settings: KubeSettings) -> Self {
        Self { client, settings }
    }

    /// Watches every kind of [`WATCHED`] and [`REPORTED`] and publishes the index on
    /// `index_tx` (first once everything is listed, then on every change) and what the
    /// status and Event writers need on `observed_tx`. Returns when `index_tx` has no
    /// receiver left.
    pub async fn run(
        self,
        index_tx: watch::Sender<Arc<Index>>,
        observed_tx: watch::Sender<Arc<ObservedMap>>,
    ) {
        let (tx, mut rx) = mpsc::channel(self.settings.queue);
        let mut watchers = tokio::task::JoinSet::new();
        for kind in all_watched() {
            watchers.spawn(watch_kind(
                self.client.clone(),
                kind,
                tx.clone(),
                self.settings.clone(),
            ));
        }
        drop(tx);
        let mut state = KubeState::new(all_watched());
        let mut waiting = tokio::time::interval(Duration::from_secs(10));
        waiting.tick().await;
        loop {
            let first = tokio::select! {
                update = rx.recv() => update,
                () = index_tx.closed() => return,
                _ = waiting.tick(), if !state.synced() => {
                    tracing::info!(kinds = ?state.pending(), "waiting for the initial list of these kinds");
                    continue;
                }
            };
            let Some(first) = first else { return };
            handle(&mut state, first);
            // Apply what is already queued before publishing.
            for _ in 1..self.settings.batch {
                match rx.try_recv() {
                    Ok(update) => handle(&mut state, update),
                    Err(_) => break,
                }
            }
            if !state.synced() {
                continue;
            }
            if state.take_index_changed() {
                let index = state.index();
                tracing::debug!(
                    objects = index.len(),
                    problems = index.problems().len(),
                    "Kubernetes objects changed"
                );
                if index_tx.send(Arc::new(index)).is_err() {
                    return;
                }
            }
            if state.take_observed_changed() {
                observed_tx.send_replace(Arc::new(state.observed()));
            }
        }
    }
}

fn handle(state: &mut KubeState, update: Update) {
    match update {
        Update::Event(kind, event) => {
            state.apply(kind, *event);
        }
        Update::Missing(kind) => {
            state.mark_missing(kind);
        }
    }
}

/// True when `e` says the kind is not served (its CRD is not installed).
fn is_not_found(e: &watcher::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_not_found())
}

/// Whether the API server refused the listing (403: RBAC without the kind).
fn is_forbidden(e: &watcher::Error) -> bool {
    api_status(e).is_some_and(|s| s.code == 403)
}

fn api_status(e: &watcher::Error) -> Option<&kube::core::Status> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s),
        watcher::Error::WatchError(s) => Some(s),
        _ => None,
    }
}

/// Whether the mesh only reports on `kind` (never enforces it): not being allowed to read it
/// must not hold back the index of everything it enforces.
fn only_reported(kind: &WatchedKind) -> bool {
    REPORTED
        .iter()
        .any(|k| k.kind == kind.kind && k.group == kind.group)
}

/// Whether not being allowed to list `kind` counts as "none of these": kinds only reported,
/// and the mesh config's ConfigMap (its defaults apply).
fn may_be_forbidden(kind: &WatchedKind) -> bool {
    only_reported(kind) || kind.only_named.is_some()
}

/// Runs the watcher of one kind, forwarding its events, until the queue closes.
async fn watch_kind(
    client: kube::Client,
    kind: &'static WatchedKind,
    tx: mpsc::Sender<Update>,
    settings: KubeSettings,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.api_resource());
    // The watcher relists by itself after an error: polling it again retries.
    let config = match kind.only_named {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let mut stream = std::pin::pin!(watcher(api, config));
    let mut backoff = Backoff::new(settings.max_backoff);
    let mut missing = false;
    while let Some(item) = stream.next().await {
        let update = match item {
            Ok(event) => {
                if std::mem::take(&mut missing) {
                    tracing::info!(kind = kind.kind, "resource is now served; watching it");
                }
                backoff.reset();
                Update::Event(kind, Box::new(event))
            }
            Err(e)
                if kind.optional
                    && (is_not_found(&e) || (may_be_forbidden(kind) && is_forbidden(&e))) =>
            {
                if !missing {
                    tracing::warn!(
                        kind = kind.kind,
                        api_version = %kind.api_version(),
                        retry_s = settings.missing_retry.as_secs(),
                        error = %e,
                        "resource not served (CRD not installed?) or not allowed (RBAC); \
                         treating it as empty"
                    );
                    missing = true;
                }
                if tx.send(Update::Missing(kind)).await.is_err() {
                    return;
                }
                tokio::time::sleep(settings.missing_retry).await;
                continue;
            }
            Err(e) => {
                let wait = backoff.step();
                tracing::warn!(kind = kind.kind, error = %e, retry_s = wait.as_secs(), "watch failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let steps: Vec<u64> = (0..5).map(|_| b.step().as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.step(), Duration::from_secs(1));
    }

    #[test]
    fn not_found_means_not_installed() {
        let status = |reason: &str, code| {
            kube::core::Status::failure("x", reason)
                .with_code(code)
                .boxed()
        };
        let missing = watcher::Error::InitialListFailed(kube::Error::Api(status("NotFound", 404)));
        assert!(is_not_found(&missing));
        let forbidden =
            watcher::Error::InitialListFailed(kube::Error::Api(status("Forbidden", 403)));
        assert!(!is_not_found(&forbidden));
        assert!(is_forbidden(&forbidden) && !is_forbidden(&missing));
        assert!(!is_not_found(&watcher::Error::NoResourceVersion));
        // Only the kinds the mesh merely reports on may be skipped when forbidden.
        assert!(REPORTED.iter().all(only_reported));
        assert!(!WATCHED.iter().any(only_reported));
    }
}
