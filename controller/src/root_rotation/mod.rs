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

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use api::prost_types::Any;
use api::trust::TrustBundle;
use hbone::Authority;
use serde::Serialize;
use tokio::sync::watch;

use crate::ca::rotation::{self, Phase, State, now_secs};
use crate::ca::{CaError, CertificateAuthority, Origin, store};
use crate::server::ServingTls;
use crate::translate::Published;
use crate::xds::Clients;
pub use progress::Progress;

/// How often the phases are checked.
const TICK: Duration = Duration::from_secs(1);
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
    #[error(
        "root rotation needs a CA folder holding a generated root (controller --ca-dir); this CA is {0}"
    )]
    NotRotatable(&'static str),
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
    /// The CA folder when rotation is possible.
    dir: Option<PathBuf>,
    state: Mutex<State>,
    /// The trust bundle served over xDS.
    bundle: watch::Sender<Any>,
    clients: Clients,
    served: watch::Receiver<Published>,
    serving: ServingTls,
    started: Instant,
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
    /// The driver for `ca`, resuming the phase recorded in its folder; returns the trust
    /// bundle to serve, which follows every step.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        clients: Clients,
        served: watch::Receiver<Published>,
        serving: ServingTls,
    ) -> Result<(Self, watch::Receiver<Any>), CaError> {
        let dir = match ca.origin() {
            Origin::Generated | Origin::Reloaded => ca.dir().map(PathBuf::from),
            Origin::PluggedIn | Origin::Ephemeral => None,
        };
        let state = match &dir {
            Some(dir) => rotation::load(dir)?,
            None => State::default(),
        };
        let (bundle, receiver) = watch::channel(bundle_body(&ca, &state)?);
        let rotation = Self {
            inner: Arc::new(Inner {
                ca,
                dir,
                state: Mutex::new(state),
                bundle,
                clients,
                served,
                serving,
                started: Instant::now(),
                settle: SETTLE,
            }),
        };
        rotation.inner.record_metrics(&rotation.inner.lock());
        Ok((rotation, receiver))
    }

    /// Phase 1: generates the new root, records it, and publishes it beside the old one.
    pub fn start(&self, options: RotateOptions) -> Result<Status, RotationError> {
        let inner = &self.inner;
        let dir =
            inner
                .dir
                .as_deref()
                .ok_or(RotationError::NotRotatable(match inner.ca.origin() {
                    Origin::PluggedIn => "plugged in (replace its files to rotate)",
                    _ => "kept in memory only",
                }))?;
        {
            let mut state = inner.lock();
            if state.phase != Phase::Idle {
                return Err(RotationError::InProgress(state.phase));
            }
            let next = Authority::generate_root(inner.ca.trust_domain(), options.new_root_ttl)?;
            let old_root = inner.ca.roots_pem()?.first().cloned().unwrap_or_default();
            // The key before the record: a stop in between leaves an unused key, never a
            // record naming a root whose key is lost.
            rotation::write_next_key(dir, next.key_pem())?;
            let published = State {
                phase: Phase::Published,
                since: now_secs(),
                old_root,
                new_root: next.root_pem(),
                reissue_within_ms: options.reissue_within.as_millis() as u64,
                longest_leaf_secs: inner.ca.longest_leaf().as_secs(),
                drop_after: 0,
                completed_at: state.completed_at,
            };
            rotation::save(dir, &published)?;
            inner.ca.add_trusted_root(&published.new_root)?;
            *state = published;
            inner.publish(&state)?;
            tracing::info!("root rotation: new root published beside the old one (phase 1)");
        }
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

    /// Advances the phases until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut shutdown => return,
            }
            if let Err(e) = self.inner.advance() {
                tracing::error!(error = %e, "root rotation could not advance; retrying");
            }
        }
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

    /// One step, if its condition holds; the metrics in any case (the proxies' progress
    /// changes without a step).
    fn advance(&self) -> Result<(), RotationError> {
        let mut state = self.lock();
        let stepped = match self.dir.as_deref() {
            Some(dir) => self.step(dir, &mut state),
            None => Ok(()),
        };
        self.record_metrics(&state);
        stepped
    }

    fn step(&self, dir: &std::path::Path, state: &mut State) -> Result<(), RotationError> {
        match state.phase {
            Phase::Idle => {}
            Phase::Published if self.bundle_delivered() => {
                let next = store::root_from_pem(&rotation::read_next_key(dir)?, &state.new_root)?;
                let now = now_secs();
                let longest = state
                    .longest_leaf_secs
                    .max(self.ca.longest_leaf().as_secs());
                let window = state.reissue_within().as_secs_f64().ceil() as u64;
                let reissuing = State {
                    phase: Phase::Reissuing,
                    since: now,
                    longest_leaf_secs: longest,
                    drop_after: now + longest.max(window) + 1,
                    ..state.clone()
                };
                rotation::save(dir, &reissuing)?;
                self.ca.rotate(next)?;
                if let Err(e) = self.serving.renew() {
                    tracing::error!(error = %e, "renewing the serving certificate under the new root");
                }
                *state = reissuing;
                self.publish(state)?;
                tracing::info!("root rotation: the new root signs; proxies renew (phase 3)");
            }
            Phase::Reissuing if now_secs() >= state.drop_after && self.bundle_delivered() => {
                let now = now_secs();
                let done = State {
                    phase: Phase::Idle,
                    since: now,
                    completed_at: now,
                    ..state.clone()
                };
                rotation::save(dir, &done)?;
                self.ca.remove_trusted_root(&state.old_root)?;
                // What `rotation::repair` would finish after a stop here.
                let _ = std::fs::remove_file(dir.join(rotation::NEXT_KEY));
                *state = done;
                self.publish(state)?;
                crate::metrics::global().ca.rotation_completed();
                tracing::info!("root rotation complete: the old root is no longer trusted");
            }
            Phase::Published | Phase::Reissuing => {}
        }
        Ok(())
    }

    /// Serves the bundle `state` calls for.
    fn publish(&self, state: &State) -> Result<(), CaError> {
        let body = bundle_body(&self.ca, state)?;
        self.bundle.send_replace(body);
        Ok(())
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
                "certificates from the old root to expire (until {} s after the epoch)",
                state.drop_after
            ),
            Phase::Reissuing => stale(),
        }
    }
}

/// The trust bundle resource for `state`: the CA's roots, and in phase 3 the reissue window.
fn bundle_body(ca: &CertificateAuthority, state: &State) -> Result<Any, CaError> {
    let reissue_within = (state.phase == Phase::Reissuing)
        .then(|| state.reissue_within().try_into().ok())
        .flatten();
    Ok(api::pack(&TrustBundle {
        roots: ca.roots_pem()?,
        reissue_within,
    }))
}

/// Seconds since the epoch.
fn epoch(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
