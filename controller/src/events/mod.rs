//! Kubernetes Events about the problems translation finds in objects read from the API, so
//! that `kubectl describe` and `kubectl events` show them on every object, those without a
//! status and those of kinds the mesh does not read included (status conditions, where a
//! kind has them, are [`crate::status`]'s).
//!
//! Each problem of an object becomes one `events.k8s.io/v1` Event in the object's namespace
//! (`default` for cluster-scoped objects): type `Warning`, a [`Reason`] per class of problem,
//! the field and message as `note` (at most 1 KiB), reporting controller
//! `istio.io/mesh-controller` and the controller's pod as instance, action `Translate`.
//!
//! Not a storm: an Event is created once per (object, problem) while the problem stands; a
//! problem that persists updates its Event's `series` (count, lastObservedTime) at most once
//! per 5 minutes, as client-go's recorder does; an Event that expired meanwhile is created
//! anew. A new or changed problem is a new Event, and what is fixed or deleted is forgotten. Writes pass a token bucket (25/s, bursts of 50), at most 10 000
//! occurrences are remembered, and every outcome is counted in `controller_events_total`.

mod body;
mod memory;
mod metrics;
mod reason;
mod writer;

pub use body::{ACTION, MAX_INSTANCE, TYPE, micro_time, resource};
pub use memory::Limits;
pub use metrics::{EVENTS, EventMetrics, EventResult};
pub use reason::{MAX_NOTE, Reason, classify, note, truncate};
pub use writer::{EventError, EventSettings, EventWriter, Tally};
