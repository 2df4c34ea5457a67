//! Applying delta responses to the [`ProxyState`] and answering them (ACK or NACK), and the
//! bookkeeping of what the client holds, which survives reconnections.

use std::collections::{BTreeMap, BTreeSet};

use api::core::Node;
use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use api::prost_types::Any;

use tokio::time::Instant;

use super::held::Held;
use super::named::NamedSubscription;
use crate::state::ProxyState;

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;
/// Rejections named in one NACK message; the rest are counted (keeps the message bounded).
const MAX_NAMED_REJECTIONS: usize = 10;

/// The resource types this client subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ResourceType {
    /// Workloads and services.
    Address,
    /// Authorization policies.
    Authorization,
}

impl ResourceType {
    /// Every subscribed type.
    pub(super) const ALL: [ResourceType; 2] = [ResourceType::Address, ResourceType::Authorization];

    /// Its type URL.
    pub(super) fn url(self) -> &'static str {
        match self {
            ResourceType::Address => api::ADDRESS_TYPE_URL,
            ResourceType::Authorization => api::AUTHORIZATION_TYPE_URL,
        }
    }

    fn from_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.url() == url)
    }

    fn apply(self, state: &ProxyState, name: &str, body: &Any) -> Result<(), String> {
        let decode = |e: api::prost::DecodeError| format!("decoding: {e}");
        match self {
            ResourceType::Address => state.apply_address(name, api::unpack(body).map_err(decode)?),
            ResourceType::Authorization => {
                state.apply_authorization(name, api::unpack(body).map_err(decode)?)
            }
        }
    }

    fn remove(self, state: &ProxyState, name: &str) {
        match self {
            ResourceType::Address => state.remove_address(name),
            ResourceType::Authorization => state.remove_authorization(name),
        }
    }
}

/// What one response did, for logs.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// The type, if it was one of ours.
    pub type_url: String,
    /// Resources applied.
    pub applied: usize,
    /// Resources removed.
    pub removed: usize,
    /// Removals held back (a suspected wipe by a freshly connected controller).
    pub deferred: usize,
    /// `name: reason` of each resource refused.
    pub rejected: Vec<String>,
}

/// What the client holds, by type (see [`Held`]); survives reconnections.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    held: BTreeMap<ResourceType, Held>,
    /// Types whose first response has been applied (ever, not per connection).
    seen: BTreeSet<ResourceType>,
    /// Named subscriptions to other types, and what is held of each (by position).
    named: Vec<Named>,
}

/// A named subscription and its bookkeeping.
#[derive(Debug)]
struct Named {
    subscription: NamedSubscription,
    held: Held,
    seen: bool,
}

impl Tracker {
    /// A tracker that also subscribes to `named` (beside the workload API types).
    pub(super) fn with_subscriptions(named: Vec<NamedSubscription>) -> Self {
        Self {
            named: named
                .into_iter()
                .map(|subscription| Named {
                    subscription,
                    held: Held::default(),
                    seen: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// How many opening requests a new stream sends.
    pub(super) fn request_count(&self) -> usize {
        ResourceType::ALL.len() + self.named.len()
    }

    /// The opening request of each type on a new stream: a wildcard subscription (empty
    /// names, as Istio's ztunnel sends it) listing every resource held with its version, then
    /// each named subscription with its names.
    pub(super) fn initial_requests(&self, node: &Node) -> Vec<DeltaDiscoveryRequest> {
        let wildcard = ResourceType::ALL
            .into_iter()
            .map(|kind| DeltaDiscoveryRequest {
                node: Some(node.clone()),
                type_url: kind.url().to_owned(),
                initial_resource_versions: self
                    .held
                    .get(&kind)
                    .map(|h| h.versions.clone().into_iter().collect())
                    .unwrap_or_default(),
                ..Default::default()
            });
        let named = self.named.iter().map(|named| DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: named.subscription.type_url.clone(),
            resource_names_subscribe: named.subscription.names.clone(),
            initial_resource_versions: named.held.versions.clone().into_iter().collect(),
            ..Default::default()
        });
        wildcard.chain(named).collect()
    }

    /// How many resources of `kind` are held.
    #[cfg(test)]
    pub(super) fn held(&self, kind: ResourceType) -> usize {
        self.held.get(&kind).map_or(0, |h| h.versions.len())
    }

    /// A new stream opened: each type's first response on it is checked for a wipe.
    pub(super) fn stream_opened(&mut self) {
        for kind in ResourceType::ALL {
            self.held.entry(kind).or_default().stream_opened();
        }
        for named in &mut self.named {
            named.held.stream_opened();
        }
    }

    /// When the next held-back removals take effect.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let named = self.named.iter().map(|n| &n.held);
        self.held
            .values()
            .chain(named)
            .filter_map(Held::deadline)
            .min()
    }

    /// Applies the held-back removals due at `now`; returns how many.
    pub(super) fn expire(&mut self, state: &ProxyState, now: Instant) -> usize {
        let mut removed = 0;
        for (kind, held) in &mut self.held {
            for name in held.due(now) {
                kind.remove(state, &name);
                removed += 1;
            }
        }
        for named in &mut self.named {
            for name in named.held.due(now) {
                named.subscription.handler.remove(&name);
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "applied removals the controller did not take back");
        }
        removed
    }

    /// Applies `response` to `state` (or to its named subscription's handler) and builds its
    /// ACK (or NACK, naming the refused resources; the valid ones are applied all the same).
    pub(super) fn handle(
        &mut self,
        state: &ProxyState,
        response: DeltaDiscoveryResponse,
    ) -> (DeltaDiscoveryRequest, Outcome) {
        let mut outcome = Outcome {
            type_url: response.type_url.clone(),
            ..Default::default()
        };
        if let Some(kind) = ResourceType::from_url(&response.type_url) {
            let held = self.held.entry(kind).or_default();
            apply_response(
                &response,
                held,
                &mut outcome,
                |name, body| kind.apply(state, name, body),
                |name| kind.remove(state, name),
            );
            if self.seen.insert(kind) && self.seen.len() == ResourceType::ALL.len() {
                state.mark_synced();
            }
        } else if let Some(named) = self
            .named
            .iter_mut()
            .find(|n| n.subscription.type_url == response.type_url)
        {
            let handler = named.subscription.handler.clone();
            apply_response(
                &response,
                &mut named.held,
                &mut outcome,
                |name, body| handler.apply(name, body),
                |name| handler.remove(name),
            );
            if !named.seen {
                named.seen = true;
                handler.synced();
            }
        } else {
            outcome.rejected.push(format!(
                "type {:?} was not subscribed to",
                response.type_url
            ));
        }
        (reply(&response, &outcome.rejected), outcome)
    }
}

/// Applies the upserts and removals of `response` through `apply` and `remove`, recording
/// in `held` what was applied and in `outcome` what happened. The first response on a new
/// stream that would remove everything held has its removals held back (see [`Held`]).
fn apply_response(
    response: &DeltaDiscoveryResponse,
    held: &mut Held,
    outcome: &mut Outcome,
    apply: impl Fn(&str, &Any) -> Result<(), String>,
    remove: impl Fn(&str),
) {
    for resource in &response.resources {
        let name = if resource.name.is_empty() {
            resource
                .resource_name
                .as_ref()
                .map(|n| n.name.as_str())
                .unwrap_or_default()
        } else {
            resource.name.as_str()
        };
        let result = match (&resource.resource, name.is_empty()) {
            (_, true) => Err("resource without a name".to_owned()),
            (None, false) => Err("resource without a body".to_owned()),
            (Some(body), false) => apply(name, body),
        };
        match result {
            Ok(()) => {
                held.applied(name, &resource.version);
                outcome.applied += 1;
            }
            Err(reason) => {
                tracing::warn!(type_url = %response.type_url, resource = name, %reason, "refused xDS resource");
                outcome.rejected.push(format!("{name}: {reason}"));
            }
        }
    }
    let removed: Vec<&str> = response
        .removed_resources
        .iter()
        .map(String::as_str)
        .chain(
            response
                .removed_resource_names
                .iter()
                .map(|n| n.name.as_str()),
        )
        .collect();
    if held.take_fresh() && held.is_wipe(response.resources.len(), &removed) {
        held.defer(&removed, Instant::now());
        tracing::warn!(
            type_url = %response.type_url, held_back = held.deferred_count(),
            delay = ?super::held::WIPE_CONFIRMATION,
            "the controller removed everything right after connecting; keeping it until the \
             controller sends it again or the delay ends"
        );
        outcome.deferred += held.deferred_count();
        return;
    }
    for name in removed {
        remove(name);
        held.removed(name);
        outcome.removed += 1;
    }
}

/// The ACK of `response`, or its NACK when something was `rejected`.
fn reply(response: &DeltaDiscoveryResponse, rejected: &[String]) -> DeltaDiscoveryRequest {
    let error_detail = (!rejected.is_empty()).then(|| {
        let mut message = format!("rejected {} resource(s): ", rejected.len());
        message.push_str(
            &rejected
                .iter()
                .take(MAX_NAMED_REJECTIONS)
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        );
        if rejected.len() > MAX_NAMED_REJECTIONS {
            message.push_str(&format!(
                "; and {} more",
                rejected.len() - MAX_NAMED_REJECTIONS
            ));
        }
        api::rpc::Status {
            code: INVALID_ARGUMENT,
            message,
            details: Vec::new(),
        }
    });
    DeltaDiscoveryRequest {
        type_url: response.type_url.clone(),
        response_nonce: response.nonce.clone(),
        error_detail,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
