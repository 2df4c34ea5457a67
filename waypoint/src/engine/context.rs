//! What is known about one request as it goes through the pipeline, for its telemetry: the
//! record written when its response ends, what it holds until then, and the client's side of
//! it. Handling and forwarding both add to it.

use std::sync::Arc;

use super::downstream::Watch;
use super::telemetry::{PeerLabels, RequestRecord, ServiceLabels};

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
