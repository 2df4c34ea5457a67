//! The proxy side of in-pod capture: a ZDS client that receives each enrolled pod's network
//! namespace and runs that pod's listeners inside it; `Del` (or a pod missing from the
//! snapshot after a reconnect) stops them.
//!
//! Semantics follow Istio's ztunnel:
//!
//! - after connecting, the proxy sends `ZdsHello{V1}`; the agent sends the current pods as
//!   `Add` (with the netns descriptor) or `Keep`, then `SnapshotSent`, then changes;
//! - every request is answered with an `Ack` whose error is empty on success;
//! - `Add` for a pod already served in the same network namespace keeps the running proxy; in
//!   a different namespace (the pod sandbox was recreated) the old proxy drains and a new one
//!   starts; a proxy that fails to start is answered with the error and retried every few
//!   seconds, and readiness stays blocked meanwhile;
//! - `SnapshotSent` drains every pod neither added nor kept since the connection began, which
//!   reconciles after either side restarted;
//! - `Keep` after the snapshot, `Del` before it, a second `SnapshotSent`, or a malformed request
//!   is a protocol error: the proxy answers with the error and reconnects;
//! - when the agent goes away, running pods keep running and the proxy reconnects.

mod client;
mod launcher;
pub mod protocol;
mod registry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use client::{InpodClient, InpodSettings};
pub use launcher::{ProxyLauncher, RunningPod};

use crate::proxy::PodNetns;

/// Why a ZDS request failed.
#[derive(Debug, thiserror::Error)]
pub enum InpodError {
    /// The request broke the protocol; the connection is closed after answering.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A pod's proxy could not start; it is retried later, the connection stays.
    #[error("starting the proxy of pod {uid}: {reason}")]
    Start {
        /// Pod uid.
        uid: String,
        /// Why.
        reason: String,
    },
    /// The ZDS socket failed.
    #[error("ZDS connection: {0}")]
    Io(#[from] std::io::Error),
}

/// A pod as the node agent describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    /// Pod uid (the key of every ZDS request).
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod service account.
    pub service_account: String,
}

/// Starts and drains the proxy of one pod; the ZDS client only decides when.
///
/// Kept as a trait so the protocol and reconciliation logic is exercised in tests without the
/// data path.
pub trait Launcher: Send + Sync + 'static {
    /// A running pod proxy.
    type Proxy: Send + 'static;

    /// Starts serving `pod` inside `netns`.
    fn start(
        &self,
        pod: &PodInfo,
        netns: Arc<PodNetns>,
    ) -> impl Future<Output = Result<Self::Proxy, String>> + Send;

    /// Stops accepting, lets live connections run for up to `deadline`, then cuts them and
    /// releases what `start` took.
    fn drain(
        &self,
        pod: &PodInfo,
        proxy: Self::Proxy,
        deadline: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// Live connections of a running proxy, for the dump.
    fn active_connections(&self, proxy: &Self::Proxy) -> usize;
}
