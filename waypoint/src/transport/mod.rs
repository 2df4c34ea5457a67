//! Bytes in and out: the HBONE server, protocol detection, HTTP serving, HBONE clients to
//! endpoints, and the controller's config.
//!
//! ```text
//! ztunnel ──HBONE (waypoint identity)──► inbound ──detect──► HTTP/1.1 | HTTP/2 ──► engine
//!                                           └── TCP port ──► L4 authz ──► passthrough
//! engine ──UpstreamClient::send──► upstream: HTTP client pool ──HBONE──► endpoint ztunnel:15008
//! controller ──delta xDS──► config: Waypoint → Engine::compile → swapped in (or NACK)
//! ```
//!
//! - [`config`]: the current [`Engine`](crate::engine::Engine), replaced on each accepted
//!   config from the controller;
//! - [`inbound`]: the HBONE server's handler: caller, target, protocol, HTTP serving;
//! - [`detect`]: telling HTTP/2 prior knowledge, HTTP/1.1 and opaque bytes apart;
//! - [`serving`]: serving HTTP on one tunnel within the deadlines and bounds of
//!   [`hbone::ServerLimits`], counting what they end;
//! - [`passthrough`]: TCP ports, spliced to an endpoint with L4 policy only;
//! - [`upstream`]: [`engine::UpstreamClient`](crate::engine::UpstreamClient) over HBONE, with
//!   [`pool`] keeping HTTP connections to endpoints;
//! - [`headers`]: what changes at each hop regardless of config (hop-by-hop headers, URI form);
//! - [`server`]: the HBONE listener with the waypoint's certificate, rotated live, and the
//!   same limits.

pub mod config;
pub mod detect;
pub mod headers;
pub mod inbound;
pub mod io;
pub mod passthrough;
pub mod pool;
pub mod server;
pub mod serving;
pub mod upstream;

pub use config::ConfigStore;
pub use inbound::{Inbound, InboundSettings};
pub use server::{ServeError, serve_hbone};
pub use upstream::{HboneUpstream, UpstreamSettings};
