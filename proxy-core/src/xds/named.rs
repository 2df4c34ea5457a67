//! Named subscriptions: resources of types outside the workload API, asked for by name (a
//! non-wildcard delta subscription) and handed to the caller's handler. A waypoint uses one
//! for its own `mesh.waypoint.v1.Waypoint`.

use std::sync::Arc;

use api::prost_types::Any;

/// Receives the resources of a [`NamedSubscription`].
///
/// Calls come from the xDS client's task, one at a time, in the order of the responses.
pub trait ResourceHandler: Send + Sync + 'static {
    /// Applies resource `name`. An error refuses it: the response is NACKed with the reason
    /// and the resource's previous version (if any) is what the handler keeps.
    fn apply(&self, name: &str, resource: &Any) -> Result<(), String>;

    /// The controller removed resource `name`.
    fn remove(&self, name: &str);

    /// The first response of this type has been handled (it may have carried nothing, when
    /// no subscribed resource exists). Called once per client, not per connection.
    fn synced(&self) {}
}

/// A subscription to `names` of `type_url`, whose resources go to `handler`.
#[derive(Clone)]
pub struct NamedSubscription {
    /// The resource type.
    pub type_url: String,
    /// The resource names asked for (never empty: an empty list would mean wildcard).
    pub names: Vec<String>,
    /// Where resources go.
    pub handler: Arc<dyn ResourceHandler>,
}

impl std::fmt::Debug for NamedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedSubscription")
            .field("type_url", &self.type_url)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}
