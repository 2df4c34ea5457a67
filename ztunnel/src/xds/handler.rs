//! Applying delta responses to the [`ProxyState`] and answering them (ACK or NACK), and the
//! bookkeeping of what the client holds, which survives reconnections.

use std::collections::{BTreeMap, BTreeSet};

use api::core::Node;
use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use api::prost_types::Any;

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
}

impl Tracker {
    /// The opening request of each type on a new stream: a wildcard subscription (empty
    /// names, as Istio's ztunnel sends it) listing every resource held with its version.
    pub(super) fn initial_requests(&self, node: &Node) -> Vec<DeltaDiscoveryRequest> {
        ResourceType::ALL
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
            })
            .collect()
    }

    /// How many resources of `kind` are held.
    #[cfg(test)]
    pub(super) fn held(&self, kind: ResourceType) -> usize {
        self.versions.get(&kind).map_or(0, BTreeMap::len)
    }

    /// Applies `response` to `state` and builds its ACK (or NACK, naming the refused
    /// resources; the valid ones are applied all the same).
    pub(super) fn handle(
        &mut self,
        state: &ProxyState,
        response: DeltaDiscoveryResponse,
    ) -> (DeltaDiscoveryRequest, Outcome) {
        let mut outcome = Outcome {
            type_url: response.type_url.clone(),
            ..Default::default()
        };
        let Some(kind) = ResourceType::from_url(&response.type_url) else {
            outcome.rejected.push(format!(
                "type {:?} was not subscribed to",
                response.type_url
            ));
            return (reply(&response, &outcome.rejected), outcome);
        };
        let versions = self.versions.entry(kind).or_default();
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
                (Some(body), false) => kind.apply(state, name, body),
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
            kind.remove(state, name);
            versions.remove(name);
            outcome.removed += 1;
        }
        if self.seen.insert(kind) && self.seen.len() == ResourceType::ALL.len() {
            state.mark_synced();
        }
        (reply(&response, &outcome.rejected), outcome)
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
