//! The phases' steps: a rotation begun, advanced by the leader (which first completes what
//! a previous leader left half done and answers requests), or followed from a shared store
//! by the replicas that do not lead.

use std::time::Duration;

use hbone::Authority;

use super::{Inner, RotateOptions, RotationError, bundle_body};
use crate::ca::CaError;
use crate::ca::rotation::{self, Material, Phase, State, now_secs};
use crate::ca::rotation_store::{RotationStore, generated_material};

impl Inner {
    /// Phase 1 of a rotation to a new generated root. The caller holds `steps`.
    pub(super) async fn start(&self, options: RotateOptions) -> Result<(), RotationError> {
        self.begin(options.reissue_within, || {
            let next = Authority::generate_root(self.ca.trust_domain(), options.new_root_ttl)?;
            Ok((generated_material(&next), next))
        })
        .await
    }

    /// Stages the material `next` gives (refused material stages nothing), records phase 1
    /// and publishes both roots. The caller holds `steps`.
    pub(super) async fn begin(
        &self,
        reissue_within: Duration,
        next: impl FnOnce() -> Result<(Material, Authority), RotationError>,
    ) -> Result<(), RotationError> {
        let store = self
            .store
            .as_ref()
            .ok_or(RotationError::NotRotatable("kept in memory only"))?;
        if let Some(reason) = store.refusal() {
            return Err(RotationError::Refused(reason));
        }
        if !self.leadership.is_leader() {
            return Err(RotationError::NotLeader);
        }
        let state = self.lock().clone();
        if state.phase != Phase::Idle {
            return Err(RotationError::InProgress(state.phase));
        }
        let (material, next) = next()?;
        store.stage(material).await?;
        let published = State {
            phase: Phase::Published,
            since: now_secs(),
            old_roots: self.ca.roots_pem()?.concat(),
            new_roots: rotation::roots_pem(&next),
            reissue_within_ms: reissue_within.as_millis() as u64,
            longest_leaf_secs: self.ca.longest_leaf().as_secs(),
            drop_after: 0,
            completed_at: state.completed_at,
        };
        self.enter(store.as_ref(), published).await?;
        tracing::info!("CA rotation: new roots published beside the old ones (phase 1)");
        Ok(())
    }

    /// One step, if its condition holds, while this replica leads; otherwise, on a shared
    /// store, what the leader recorded is loaded. The metrics in any case (the proxies'
    /// progress changes without a step).
    pub(super) async fn advance(&self) -> Result<(), RotationError> {
        let mut repaired = self.steps.lock().await;
        let result = match &self.store {
            Some(store) if self.leadership.is_leader() => {
                self.lead(store.as_ref(), &mut repaired).await
            }
            Some(store) if store.shared() => {
                *repaired = false;
                self.follow(store.as_ref()).await.map_err(Into::into)
            }
            _ => Ok(()),
        };
        self.record_metrics(&self.lock());
        result
    }

    /// The leader's turn: on a shared store, the previous leader's last step completed
    /// (once per leadership), the owner's edits loaded and a request answered; then a step.
    async fn lead(
        &self,
        store: &dyn RotationStore,
        repaired: &mut bool,
    ) -> Result<(), RotationError> {
        if store.shared() {
            if !*repaired {
                // Also which CA is live (a plug-in one is never written) before repairing.
                let (recorded, _, _) = store.snapshot().await?;
                store.enter(&recorded).await?;
                *repaired = true;
            }
            self.follow(store).await?;
            if let Some(request) = store.request().await? {
                self.answer(store, request).await?;
            }
        }
        self.step(store).await
    }

    /// Loads what `store` records and the material it calls for: the CA signs with it and
    /// the bundle carries its roots (the serving certificate is renewed under a new signer).
    pub(super) async fn follow(&self, store: &dyn RotationStore) -> Result<(), CaError> {
        let (state, authority, origin) = store.snapshot().await?;
        let installed = self.ca.install(authority, origin)?;
        if installed && let Err(e) = self.serving.renew() {
            tracing::error!(error = %e, "renewing the serving certificate under the new signer");
        }
        let recorded = *self.lock() != state;
        if installed || recorded {
            *self.lock() = state.clone();
            self.publish(&state)?;
        }
        Ok(())
    }

    async fn step(&self, store: &dyn RotationStore) -> Result<(), RotationError> {
        let state = self.lock().clone();
        match state.phase {
            Phase::Idle => {}
            Phase::Published if self.bundle_delivered() => {
                // The staged material must still load before anything changes.
                store.staged().await?;
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
                    ..state
                };
                self.enter(store, reissuing).await?;
                if let Err(e) = self.serving.renew() {
                    tracing::error!(error = %e, "renewing the serving certificate under the new signer");
                }
                tracing::info!("CA rotation: the new material signs; proxies renew (phase 3)");
            }
            Phase::Reissuing if now_secs() >= state.drop_after && self.bundle_delivered() => {
                let now = now_secs();
                let done = State {
                    phase: Phase::Idle,
                    since: now,
                    completed_at: now,
                    ..state
                };
                self.enter(store, done).await?;
                crate::metrics::global().ca.rotation_completed();
                tracing::info!("CA rotation complete: the old roots are no longer trusted");
            }
            Phase::Published | Phase::Reissuing => {}
        }
        Ok(())
    }

    /// Records `next` (before anything takes effect), writes the live material it calls
    /// for, loads the CA from it and serves its bundle.
    async fn enter(&self, store: &dyn RotationStore, next: State) -> Result<(), CaError> {
        store.enter(&next).await?;
        let (authority, origin) = store.live().await?;
        self.ca.install(authority, origin)?;
        *self.lock() = next.clone();
        self.publish(&next)
    }

    /// Serves the bundle `state` calls for, and its roots.
    fn publish(&self, state: &State) -> Result<(), CaError> {
        let body = bundle_body(&self.ca, state)?;
        self.bundle.send_if_modified(|current| {
            let changed = *current != body;
            *current = body;
            changed
        });
        let roots = self.ca.roots_pem()?;
        self.roots.send_if_modified(|current| {
            let changed = *current != roots;
            *current = roots;
            changed
        });
        Ok(())
    }
}
