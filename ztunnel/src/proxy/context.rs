//! What one pod's proxy knows, and what its listeners share: the pod, the mesh, its identity,
//! live connections and the HBONE pool; and how a connection is counted and logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hbone::Identity;
use proxy_core::connections::{CloseReason, LiveConnections, Relayed};
use proxy_core::identity::CertManager;
use proxy_core::state::{ProxyState, Workload};
use proxy_core::tap::{CLOSE, OPEN, Tap, TapEvent};
use proxy_core::telemetry::{ConnectionLabels, ConnectionRecord, Metrics, Reporter};

use super::error::ProxyError;
use super::netns::PodNetns;
use super::tapped::{self, ALLOW, Carried, DENY, Seen};

/// Everything one pod's proxy needs.
#[derive(Clone)]
pub struct PodContext {
    /// Pod uid (as sent over ZDS).
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod service account.
    pub service_account: String,
    /// The pod's network namespace.
    pub netns: Arc<PodNetns>,
    /// This node's name.
    pub node: String,
    /// Trust domain of identities.
    pub trust_domain: String,
    /// Mesh config.
    pub state: ProxyState,
    /// Certificates.
    pub certs: Arc<CertManager>,
    /// Telemetry.
    pub metrics: Arc<Metrics>,
    /// What a peer may hold on the pod's HBONE listener.
    pub limits: hbone::ServerLimits,
    /// The node's live connection events for `meshctl tap`.
    pub tap: Arc<Tap>,
}

/// What every listener of one pod shares.
pub(crate) struct Shared {
    pub(crate) ctx: PodContext,
    /// The pod's own identity (from its service account).
    pub(crate) identity: Identity,
    pub(crate) registry: Arc<LiveConnections>,
    /// HBONE client connections of this pod, dialed from inside its namespace.
    pub(crate) pool: hbone::Pool,
}

impl Shared {
    /// This pod's workload: the one owning `ip` if it is this pod, else found by uid.
    pub(crate) fn local_workload(&self, ip: Option<IpAddr>) -> Option<Arc<Workload>> {
        let state = &self.ctx.state;
        ip.and_then(|ip| state.workload_by_ip(ip))
            .filter(|w| w.namespace == self.ctx.namespace && w.name == self.ctx.name)
            .or_else(|| state.workload_by_uid(&self.ctx.uid))
    }

    /// Counts a connection as opened; the returned record closes it later, through
    /// [`Shared::record`] or [`Shared::record_failure`]. An outbound connection is tapped as
    /// open now; an inbound one once authorization let it through ([`Shared::allowed`]).
    pub(crate) fn opened(
        &self,
        labels: ConnectionLabels,
        source: SocketAddr,
        destination: SocketAddr,
        start: Instant,
    ) -> Finished {
        self.ctx.metrics.connection_opened(&labels);
        let finished = Finished {
            labels,
            source,
            destination,
            start,
        };
        if finished.labels.reporter != Some(Reporter::Destination) {
            self.ctx
                .tap
                .publish(|| tapped::event(&finished.seen(), OPEN, "", None));
        }
        finished
    }

    /// Taps an inbound connection authorization let through as open.
    pub(crate) fn allowed(&self, finished: &Finished) {
        self.ctx
            .tap
            .publish(|| tapped::event(&finished.seen(), OPEN, ALLOW, None));
    }

    /// Reports a finished connection.
    pub(crate) fn record(&self, mut finished: Finished, relayed: Relayed) {
        if let Some(cut) = &relayed.cut {
            finished.labels.response_flags = cut.response_flag().to_owned();
        }
        let error = relayed
            .error
            .or_else(|| relayed.cut.as_ref().map(CloseReason::to_string));
        let record = self.count_closed(finished, relayed.sent, relayed.received, error);
        match &relayed.cut {
            // A policy that now denies it cut it: the close carries that verdict.
            Some(CloseReason::Policy(policy)) => self.tap_closed(&record, DENY, policy),
            _ => self.tap_closed(&record, allowed(&record), ""),
        }
    }

    /// Reports a connection that failed before any byte flowed. Denied by authorization, it
    /// is tapped as one event with the verdict and the policy, never as opened nor closed.
    pub(crate) fn record_failure(&self, mut finished: Finished, error: &ProxyError) {
        finished.labels.response_flags = error.response_flag().to_owned();
        let record = self.count_closed(finished, 0, 0, Some(error.to_string()));
        if let ProxyError::Denied(policy) = error {
            self.ctx.tap.publish(|| TapEvent {
                // `namespace/name` of a DENY policy; the reason when no ALLOW matched.
                policy: policy
                    .strip_prefix("denied by ")
                    .unwrap_or(policy)
                    .to_owned(),
                ..tapped::event(&seen(&record), OPEN, DENY, None)
            });
        } else {
            self.tap_closed(&record, allowed(&record), "");
        }
    }

    /// Counts the close in the metrics and the access log.
    fn count_closed(
        &self,
        finished: Finished,
        sent: u64,
        received: u64,
        error: Option<String>,
    ) -> ConnectionRecord {
        let record = ConnectionRecord {
            labels: finished.labels,
            source: finished.source,
            destination: finished.destination,
            bytes_sent: sent,
            bytes_received: received,
            duration: finished.start.elapsed(),
            error,
        };
        self.ctx.metrics.connection_closed(&record);
        record
    }

    fn tap_closed(&self, record: &ConnectionRecord, verdict: &'static str, policy: &str) {
        self.ctx.tap.publish(|| {
            let carried = Carried {
                sent: record.bytes_sent,
                received: record.bytes_received,
                duration: record.duration,
            };
            TapEvent {
                policy: policy.to_owned(),
                ..tapped::event(&seen(record), CLOSE, verdict, Some(&carried))
            }
        });
    }
}

/// The verdict a close carries when no policy cut it: inbound connections are only closed
/// once authorization allowed them; outbound ones are decided at the destination.
fn allowed(record: &ConnectionRecord) -> &'static str {
    if record.labels.reporter == Some(Reporter::Destination) {
        ALLOW
    } else {
        ""
    }
}

fn seen(record: &ConnectionRecord) -> Seen<'_> {
    Seen {
        labels: &record.labels,
        source: record.source,
        destination: record.destination,
    }
}

/// What the access log and the close metrics need about an opened connection (made by
/// [`Shared::opened`]).
pub(crate) struct Finished {
    pub(crate) labels: ConnectionLabels,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
    pub(crate) start: Instant,
}

impl Finished {
    fn seen(&self) -> Seen<'_> {
        Seen {
            labels: &self.labels,
            source: self.source,
            destination: self.destination,
        }
    }
}
