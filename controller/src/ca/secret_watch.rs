//! Notice of changes to the CA's Secrets, so that replicas read them when they change rather
//! than every second: one watch per Secret, by name (a `metadata.name` field selector, which
//! RBAC authorizes by `resourceNames`), counting what it sees.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::backoff::Backoff;

/// The longest pause between two attempts of a failing watch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the watches have seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Whether every watch has listed its Secret and is watching: until then, and after any
    /// watch fails, a change may go unseen.
    pub watching: bool,
    /// Changes seen (a relist counts as one): it grows on every change.
    pub seen: u64,
}

/// Watches `names` in `api`'s namespace until every receiver of the returned channel is gone.
pub fn watch_secrets(api: Api<Secret>, names: &[&str]) -> watch::Receiver<Changes> {
    let (tx, rx) = watch::channel(Changes::default());
    let synced = std::sync::Arc::new(std::sync::Mutex::new(vec![false; names.len()]));
    for (index, name) in names.iter().enumerate() {
        let watched = Watched {
            api: api.clone(),
            name: (*name).to_owned(),
            index,
            synced: synced.clone(),
            tx: tx.clone(),
        };
        tokio::spawn(async move {
            let tx = watched.tx.clone();
            tokio::select! {
                () = watched.run() => {}
                () = tx.closed() => {}
            }
        });
    }
    rx
}

/// One Secret's watch.
struct Watched {
    api: Api<Secret>,
    name: String,
    index: usize,
    /// Whether each watch is listed and watching.
    synced: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
    tx: watch::Sender<Changes>,
}

impl Watched {
    async fn run(self) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let mut stream = std::pin::pin!(watcher(self.api.clone(), config));
        let mut backoff = Backoff::new(MAX_BACKOFF);
        while let Some(item) = stream.next().await {
            match item {
                // The objects of a (re)list arrive before its end: one change for all.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(watcher::Event::InitDone) => {
                    backoff.reset();
                    self.saw(Some(true));
                }
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => self.saw(None),
                Err(e) => {
                    tracing::warn!(secret = %self.name, error = %e,
                        "watching the CA Secret failed; reading it every second meanwhile");
                    self.saw(Some(false));
                    tokio::time::sleep(backoff.step()).await;
                }
            }
        }
    }

    /// Counts a change, and whether this watch is synced when `synced` says.
    fn saw(&self, synced: Option<bool>) {
        let watching = {
            let mut all = self.synced.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(synced) = synced {
                all[self.index] = synced;
            }
            all.iter().all(|s| *s)
        };
        self.tx.send_modify(|c| {
            c.watching = watching;
            c.seen += 1;
        });
    }
}
