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
mod error;
mod launcher;
mod pod;
pub mod protocol;
mod registry;

pub use client::{InpodClient, InpodSettings};
pub use error::InpodError;
pub use launcher::{ProxyLauncher, RunningPod};
pub use pod::{Launcher, PodInfo};
