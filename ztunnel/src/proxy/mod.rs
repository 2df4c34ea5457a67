//! The data path of one captured pod: outbound (15001), inbound plaintext (15006) and inbound
//! HBONE (15008) listeners inside the pod's network namespace.
//!
//! ```text
//! app ──REDIRECT──► 15001 outbound ──resolve──► HBONE (pool) / TCP / passthrough
//! peer ztunnel ──HBONE──► 15008 inbound ──authz──► app (from the client's IP)
//! plaintext client ──TPROXY──► 15006 passthrough ──authz (no identity)──► app
//! ```
//!
//! Every socket is created inside the pod's namespace and carries [`socket::PROXY_MARK`], so
//! the pod's redirection rules let the proxy's own traffic through.

mod context;
mod error;
mod inbound;
mod listen;
pub mod netns;
mod outbound;
mod passthrough;
mod pod;
pub mod ports;
pub mod resolve;
pub mod socket;
mod source_ports;
mod tapped;

pub use context::PodContext;
pub use error::ProxyError;
pub use netns::PodNetns;
pub use pod::PodProxy;
pub use ports::{INBOUND_HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};
