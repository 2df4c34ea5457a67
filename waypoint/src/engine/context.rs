//! One request as it goes through the pipeline: what it is handled with ([`Handling`]: the
//! engine, the transport, its origin), and what is known about it for its telemetry
//! ([`RequestContext`]: the record written when its response ends, what it holds until then,
//! and the client's side of it). Handling and forwarding both read the first and add to the
//! second.

use std::sync::Arc;

use super::compiled::Engine;
use super::downstream::Watch;
use super::origin::{Caller, Target};
use super::telemetry::{PeerLabels, RequestRecord, ServiceLabels};
use super::upstream::UpstreamClient;

/// What a request is handled with, from its arrival to its last attempt. These travel
/// together through every step.
#[derive(Clone, Copy)]
pub(crate) struct Handling<'a> {
    /// The engine (config and runtime state).
    pub engine: &'a Arc<Engine>,
    /// The transport.
    pub upstream: &'a Arc<dyn UpstreamClient>,
    /// Who sent the request.
    pub caller: &'a Caller,
    /// Where it was addressed.
    pub target: &'a Target,
}

/// What is known about a request as it goes, for its telemetry.
#[derive(Default)]
pub(crate) struct RequestContext {
    /// The record written when the response ends.
    pub record: RequestRecord,
    /// Held until the response ends.
    pub guards: Vec<Box<dyn Send + Sync>>,
    /// The client's side of the request: whether its body failed, or is awaited.
    pub downstream: Watch,
}

impl RequestContext {
    /// Adds an Envoy response flag.
    pub(crate) fn flag(&mut self, flag: &str) {
        if flag.is_empty() {
            return;
        }
        let flags = &mut self.record.labels.response_flags;
        if !flags.is_empty() {
            flags.push(',');
        }
        flags.push_str(flag);
    }

    /// Sets the destination service labels.
    pub(crate) fn service(&mut self, labels: &Arc<ServiceLabels>) {
        self.record.labels.service = labels.clone();
    }

    /// Sets the destination workload labels.
    pub(crate) fn destination(&mut self, labels: Arc<PeerLabels>) {
        self.record.labels.destination = labels;
    }
}
