//! Root rotation as an operation, in phases that are each persisted before they take effect
//! (see [`crate::ca::rotation`]) and resumed after a restart:
//!
//! 1. a new root is generated and published beside the old one, which still signs, in the
//!    trust bundle served over xDS (and the CA folder's `root-cert.pem`);
//! 2. the rotation waits until every proxy subscribed to the bundle has ACKed that version;
//! 3. the new root signs (the controller's own serving certificate first), and the bundle
//!    asks proxies to renew every certificate the old root issued, spread over a window;
//! 4. once no certificate from the old root can still be valid (its longest leaf lifetime
//!    after phase 3 began, and the window) and every proxy holds the phase-3 bundle, the old
//!    root is dropped.
//!
//! [`RootRotation::run`] advances the phases; the admin endpoint starts a rotation and
//! shows [`RootRotation::status`].

mod progress;
mod requests;
mod steps;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api::prost_types::Any;
use api::trust::TrustBundle;
use serde::Serialize;
use tokio::sync::watch;

use crate::ca::rotation::{self, Phase, State, now_secs};
use crate::ca::rotation_store::RotationStore;
use crate::ca::secret_watch::Changes;
use crate::ca::{CaError, CertificateAuthority};
use crate::leader::Leadership;
use crate::server::ServingTls;
use crate::translate::Published;
use crate::xds::Clients;
pub use progress::Progress;

/// How often the phases are checked during a rotation, or while the store cannot tell its
/// changes.
const TICK: Duration = Duration::from_secs(1);
/// How often the store is read with no rotation in progress when it tells its changes: a
/// change wakes the replica at once, this only catches what a watch might miss.
const IDLE_TICK: Duration = Duration::from_secs(30);
/// After a start, proxies reconnecting are given this long before an empty or partial list
/// of clients is believed (their reconnection backoff is at most 15 s).
const SETTLE: Duration = Duration::from_secs(20);

/// What `meshctl ca rotate-root` asks for.
#[derive(Clone, Copy, Debug)]
pub struct RotateOptions {
    /// Lifetime of the new root.
    pub new_root_ttl: Duration,
    /// Window within which proxies renew their certificates once the new root signs.
    pub reissue_within: Duration,
}

/// Why a rotation cannot start or advance.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The CA is not kept in a folder the controller owns.
    #[error("rotation needs the CA kept in a folder (controller --ca-dir); this CA is {0}")]
    NotRotatable(&'static str),
    /// The folder of the replacement material is not a plain name beside the CA's files.
    #[error("{0:?}: name a folder inside the CA folder (no path)")]
    Folder(String),
    /// Another replica leads: rotations are driven by the leader alone.
    #[error(
        "this controller replica is not the leader; ask the leader (leader_election_master_status 1)"
    )]
    NotLeader,
    /// A request for a rotation that does not read as one.
    #[error("{0}")]
    Request(String),
    /// The CA is plugged in by its owner, who rotates it.
    #[error("{0}")]
    Refused(String),
    /// Another rotation is under way.
    #[error("a root rotation is already in phase {0:?}; see `meshctl ca status`")]
    InProgress(Phase),
    /// Reading or writing the CA failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The new root could not be generated.
    #[error("generating the new root: {0}")]
    Generate(#[from] hbone::CertError),
}

/// A root rotation's driver and its view for the admin endpoint. Clones share it.
#[derive(Clone)]
pub struct RootRotation {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<CertificateAuthority>,
    /// Where the rotation lives, when rotation is possible.
    store: Option<Arc<dyn RotationStore>>,
    state: Mutex<State>,
    /// Held by each step, start and follow-up, one at a time; whether this replica, leading,
    /// has completed what the previous leader may have left half done.
    steps: tokio::sync::Mutex<bool>,
    /// The trust bundle served over xDS.
    bundle: watch::Sender<Any>,
    /// Its roots, for the ConfigMaps that publish them.
    roots: watch::Sender<Vec<String>>,
    clients: Clients,
    served: watch::Receiver<Published>,
    serving: ServingTls,
    started: Instant,
    /// Phases advance only while this replica leads.
    leadership: Leadership,
    /// [`SETTLE`], shorter in tests.
    settle: Duration,
}

/// What `GET /debug/ca` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The persisted record.
    #[serde(flatten)]
    pub state: State,
    /// The phase as the `controller_ca_rotation_phase` gauge shows it.
    pub phase_number: u64,
    /// Each published root: serial number (hex) and expiry (seconds since the epoch), the
    /// signing root first.
    pub roots: Vec<(String, u64)>,
    /// How far the served trust bundle has reached.
    pub proxies: Progress,
    /// What the rotation waits for, in words.
    pub waiting_for: String,
}

impl RootRotation {
    /// The driver for `ca`, resuming the phase recorded in `store`, advancing while
    /// `leadership` says this replica leads (and, on a store shared among replicas,
    /// following what the leader records otherwise); returns the trust bundle to serve, which
    /// follows every step.
    pub async fn new(
        ca: Arc<CertificateAuthority>,
        store: Option<Arc<dyn RotationStore>>,
        clients: Clients,
        served: watch::Receiver<Published>,
        serving: ServingTls,
        leadership: Leadership,
    ) -> Result<(Self, watch::Receiver<Any>), CaError> {
        let state = match &store {
            Some(store) => store.load().await?,
            None => State::default(),
        };
        let (bundle, receiver) = watch::channel(bundle_body(&ca, &state)?);
        let (roots, _) = watch::channel(ca.roots_pem()?);
        let rotation = Self {
            inner: Arc::new(Inner {
                ca,
                store,
                state: Mutex::new(state),
                steps: tokio::sync::Mutex::new(false),
                bundle,
                roots,
                clients,
                served,
                serving,
                started: Instant::now(),
                leadership,
                settle: SETTLE,
            }),
        };
        rotation.inner.record_metrics(&rotation.inner.lock());
        Ok((rotation, receiver))
    }

    /// The published roots, following every step: what the trust bundle ConfigMaps carry.
    pub fn roots(&self) -> watch::Receiver<Vec<String>> {
        self.inner.roots.subscribe()
    }

    /// Phase 1 of a root rotation: generates the new root, stages it, and publishes it
    /// beside the old roots.
    pub async fn start(&self, options: RotateOptions) -> Result<Status, RotationError> {
        let _steps = self.inner.steps.lock().await;
        self.inner.start(options).await?;
        Ok(self.status())
    }

    /// Phase 1 of replacing the CA's material with the CA files in `incoming` (a folder
    /// beside the CA folder's files, in either layout: a plugged-in intermediate with its
    /// chain and roots, or a root and its key): refused, with the reason, unless it loads
    /// and validates; otherwise staged, and its roots published beside the current ones.
    pub async fn replace(
        &self,
        incoming: &str,
        reissue_within: Duration,
    ) -> Result<Status, RotationError> {
        if incoming.is_empty() || incoming.contains(['/', '\\']) || incoming.starts_with('.') {
            return Err(RotationError::Folder(incoming.to_owned()));
        }
        let folder = self
            .inner
            .store
            .as_ref()
            .and_then(|s| s.folder().map(|dir| dir.join(incoming)))
            .ok_or(RotationError::NotRotatable(
                "not kept in a folder: in Kubernetes mode, `meshctl ca replace` asks the leader",
            ))?;
        let _steps = self.inner.steps.lock().await;
        self.inner
            .begin(reissue_within, || Ok(rotation::incoming_folder(&folder)?))
            .await?;
        Ok(self.status())
    }

    /// Where the rotation stands.
    pub fn status(&self) -> Status {
        let inner = &self.inner;
        let state = inner.lock().clone();
        let proxies = inner.progress().unwrap_or_default();
        let waiting_for = inner.waiting_for(&state, &proxies);
        let roots = inner
            .ca
            .expiries()
            .map(|e| {
                e.roots
                    .into_iter()
                    .map(|(serial, at)| (serial, epoch(at)))
                    .collect()
            })
            .unwrap_or_default();
        Status {
            phase_number: state.phase.number(),
            state,
            roots,
            proxies,
            waiting_for,
        }
    }

    /// Advances the phases until `shutdown` completes: every [`TICK`] during a rotation, and
    /// otherwise when the store or the leadership changes (every [`IDLE_TICK`] at least).
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut changes = self.inner.store.as_ref().and_then(|s| s.changes());
        let mut leadership = self.inner.leadership.clone();
        loop {
            if let Err(e) = self.inner.advance().await {
                tracing::error!(error = %e, "root rotation could not advance; retrying");
            }
            let phase = self.inner.lock().phase;
            let pause = pause(phase, changes.as_ref().map(|c| *c.borrow()));
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = store_changed(&mut changes) => {}
                () = leadership.changed() => {}
                () = &mut shutdown => return,
            }
        }
    }
}

/// How long to wait before the next check in `phase`, given what the store's watch tells.
fn pause(phase: Phase, changes: Option<Changes>) -> Duration {
    let watched = changes.is_some_and(|c| c.watching);
    match phase {
        Phase::Idle if watched => IDLE_TICK,
        _ => TICK,
    }
}

/// Completes when the store tells of a change; never when it cannot tell.
async fn store_changed(changes: &mut Option<watch::Receiver<Changes>>) {
    let ended = match changes.as_mut() {
        Some(changes) => changes.changed().await.is_err(),
        None => true,
    };
    if ended {
        *changes = None;
        std::future::pending::<()>().await;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The progress of the bundle being served; `None` while the xDS snapshot does not carry
    /// the latest bundle yet.
    fn progress(&self) -> Option<Progress> {
        let served = self.served.borrow().clone()?;
        let (_, resource) = served.of_type(api::TRUST_BUNDLE_TYPE_URL).next()?;
        if resource.body != *self.bundle.borrow() {
            return None;
        }
        let version = served.system_version(api::TRUST_BUNDLE_TYPE_URL);
        Some(progress::of(
            &self.clients.list(),
            api::TRUST_BUNDLE_TYPE_URL,
            &version,
        ))
    }

    /// Whether every subscribed proxy holds the served bundle, and the controller has been up
    /// long enough for reconnecting proxies to be among them.
    fn bundle_delivered(&self) -> bool {
        self.started.elapsed() >= self.settle && self.progress().is_some_and(|p| p.complete())
    }

    fn record_metrics(&self, state: &State) {
        let progress = self.progress();
        crate::metrics::global().ca.rotation_state(
            state.phase.number(),
            state.since,
            progress.as_ref().map(|p| (p.current, p.stale.len())),
        );
    }

    /// What the current phase waits for, in words.
    fn waiting_for(&self, state: &State, proxies: &Progress) -> String {
        let stale = || match proxies.stale.len() {
            0 if self.started.elapsed() < self.settle => {
                "proxies to reconnect after the controller started".to_owned()
            }
            0 => "the next check".to_owned(),
            n => format!(
                "{n} proxies to load the trust bundle: {}",
                proxies.stale.join(", ")
            ),
        };
        match state.phase {
            Phase::Idle => "nothing (no rotation in progress)".to_owned(),
            Phase::Published => stale(),
            Phase::Reissuing if now_secs() < state.drop_after => format!(
                "certificates from the old signer to expire ({} s more)",
                state.drop_after.saturating_sub(now_secs())
            ),
            Phase::Reissuing => stale(),
        }
    }
}

/// The trust bundle resource for `state`: the CA's roots and signer, and in phase 3 the
/// reissue window.
fn bundle_body(ca: &CertificateAuthority, state: &State) -> Result<Any, CaError> {
    let reissue_within = (state.phase == Phase::Reissuing)
        .then(|| state.reissue_within().try_into().ok())
        .flatten();
    Ok(api::pack(&TrustBundle {
        roots: ca.roots_pem()?,
        reissue_within,
        signer: ca.signer_der()?,
    }))
}

/// Seconds since the epoch.
fn epoch(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
