//! Capture at pod creation: the node agent's side of the chained CNI plugin
//! (`ztunnel-cni`, the crate in `cni-plugin/`).
//!
//! - [`protocol`]: the JSON request and answer exchanged over the agent's CNI socket;
//! - [`server`]: the socket, which waits for the pod to be listed on the node and has the
//!   enrollment loop capture it before the runtime starts its containers;
//! - [`install`]: putting the plugin into the node's CNI configuration (and taking it out).

pub mod install;
pub mod server;

pub use ztunnel_cni::protocol;
