//! Applying delta responses to the [`ProxyState`] and answering them (ACK or NACK), and the
//! bookkeeping of what the client holds, which survives reconnections.

use std::collections::{BTreeMap, BTreeSet};

use api::core::Node;
use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use api::prost_types::Any;

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
    /// `name: reason` of each resource refused.
    pub rejected: Vec<String>,
}

/// What the client holds, by type: resource name → version. Only resources actually applied
/// are recorded, so on reconnection the controller resends what was refused.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    versions: BTreeMap<ResourceType, BTreeMap<String, String>>,
    /// Types whose first response has been applied (ever, not per connection).
    seen: BTreeSet<ResourceType>,
    /// Named subscriptions to other types, and what is held of each (by position).
    named: Vec<Named>,
}

/// A named subscription and its bookkeeping.
#[derive(Debug)]
struct Named {
    subscription: NamedSubscription,
    versions: BTreeMap<String, String>,
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
                    versions: BTreeMap::new(),
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
                    .versions
                    .get(&kind)
                    .map(|v| v.clone().into_iter().collect())
                    .unwrap_or_default(),
                ..Default::default()
            });
        let named = self.named.iter().map(|named| DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: named.subscription.type_url.clone(),
            resource_names_subscribe: named.subscription.names.clone(),
            initial_resource_versions: named.versions.clone().into_iter().collect(),
            ..Default::default()
        });
        wildcard.chain(named).collect()
    }

    /// How many resources of `kind` are held.
    #[cfg(test)]
    pub(super) fn held(&self, kind: ResourceType) -> usize {
        self.versions.get(&kind).map_or(0, BTreeMap::len)
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
            let versions = self.versions.entry(kind).or_default();
            apply_response(
                &response,
                versions,
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
                &mut named.versions,
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
/// in `versions` what was applied and in `outcome` what happened.
fn apply_response(
    response: &DeltaDiscoveryResponse,
    versions: &mut BTreeMap<String, String>,
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
                versions.insert(name.to_owned(), resource.version.clone());
                outcome.applied += 1;
            }
            Err(reason) => {
                tracing::warn!(type_url = %response.type_url, resource = name, %reason, "refused xDS resource");
                outcome.rejected.push(format!("{name}: {reason}"));
            }
        }
    }
    let removed = response.removed_resources.iter().map(String::as_str).chain(
        response
            .removed_resource_names
            .iter()
            .map(|n| n.name.as_str()),
    );
    for name in removed {
        remove(name);
        versions.remove(name);
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
#[path = "handler_tests.rs"]
mod tests;
