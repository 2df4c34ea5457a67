//! What the client holds of one resource type, and the guard that keeps it when a freshly
//! (re)connected controller says everything is gone.
//!
//! A controller that restarts and answers before it has read its configuration sends, to a
//! client reconnecting with what it holds, the removal of every resource: workloads vanish,
//! DENY policies stop applying, node agents release their pods. So the first response of a
//! type on a new stream that removes everything held and adds nothing is not trusted at once:
//! its removals are held back for [`WIPE_CONFIRMATION`] (Envoy's initial fetch timeout). A
//! resource the controller sends again meanwhile is simply kept; what it never sends again is
//! removed when the delay ends. A real mass deletion is thus applied late, never early.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// How long removals of everything, received right after connecting, are held back.
pub(super) const WIPE_CONFIRMATION: Duration = Duration::from_secs(15);

/// One type's bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Held {
    /// What the client holds and the controller knows it holds: name → version. Only
    /// resources actually applied are recorded, so on reconnection the controller resends
    /// what was refused. Held-back removals are not in here: the controller believes them
    /// removed.
    pub versions: BTreeMap<String, String>,
    /// Whether the first response on the current stream is still to come.
    fresh: bool,
    /// Resources the controller removed that are still applied, and when they go.
    deferred: BTreeSet<String>,
    deferred_until: Option<Instant>,
}

impl Held {
    /// A new stream is open: its first response is looked at with suspicion.
    pub(super) fn stream_opened(&mut self) {
        self.fresh = true;
    }

    /// Ends the current stream's first-response window; returns whether it was open.
    pub(super) fn take_fresh(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Resource `name` was (re)applied at `version`: held, and no longer due for removal.
    pub(super) fn applied(&mut self, name: &str, version: &str) {
        self.versions.insert(name.to_owned(), version.to_owned());
        self.deferred.remove(name);
    }

    /// Whether a first response on a stream that upserts nothing and removes `removed`
    /// would leave nothing of what is held: the signature of a controller that answered
    /// before reading its configuration.
    pub(super) fn is_wipe(&self, upserts: usize, removed: &[&str]) -> bool {
        upserts == 0
            && !self.versions.is_empty()
            && self
                .versions
                .keys()
                .all(|name| removed.contains(&name.as_str()))
    }

    /// Holds back the removal of `names` until `now` + [`WIPE_CONFIRMATION`].
    pub(super) fn defer(&mut self, names: &[&str], now: Instant) {
        for name in names {
            if self.versions.remove(*name).is_some() {
                self.deferred.insert((*name).to_owned());
            }
        }
        if !self.deferred.is_empty() {
            self.deferred_until = Some(now + WIPE_CONFIRMATION);
        }
    }

    /// Resource `name` is removed: no longer held nor due.
    pub(super) fn removed(&mut self, name: &str) {
        self.versions.remove(name);
        self.deferred.remove(name);
    }

    /// When held-back removals take effect, if any are pending.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deferred_until.filter(|_| !self.deferred.is_empty())
    }

    /// The held-back removals due at `now`, handed over to be applied.
    pub(super) fn due(&mut self, now: Instant) -> Vec<String> {
        match self.deferred_until {
            Some(at) if at <= now => {
                self.deferred_until = None;
                std::mem::take(&mut self.deferred).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    /// How many removals are held back.
    pub(super) fn deferred_count(&self) -> usize {
        self.deferred.len()
    }
}
