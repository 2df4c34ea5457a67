//! Live connections of one pod and the relay between the two sides of each.
//!
//! - `registry`: counts live connections, closes them on drain, re-checks inbound ones
//!   against policy whenever the mesh config changes.
//! - `relay`: both ways until both sides are done, counted, cut when told.
//! - `copy`: one direction's copy, zero-copy where a side is an HBONE tunnel.

mod copy;
mod registry;
mod relay;

pub use registry::{AuthzInputs, CloseReason, LiveConnections, Tracked};
pub use relay::{Copied, Relayed, relay, relay_until};
