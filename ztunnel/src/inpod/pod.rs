//! A pod as the node agent describes it, and what starts and drains its proxy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::PodNetns;

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
