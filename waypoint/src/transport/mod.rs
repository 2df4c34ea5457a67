//! Bytes in and out: the HBONE server, protocol detection, HTTP serving, HBONE clients to
//! endpoints, and the controller's config.
//!
//! ```text
//! ztunnel ──HBONE (waypoint identity)──► inbound ──detect──► HTTP/1.1 | HTTP/2 ──► engine
//!                                           └── TCP port ──► L4 authz ──► passthrough
//! engine ──UpstreamClient::send──► outbound: HTTP client pool ──HBONE──► endpoint ztunnel:15008
//! controller ──delta xDS──► config_store: Waypoint → Engine::compile → swapped in (or NACK)
//! ```
//!
//! - [`config_store`]: the current [`Engine`](crate::engine::Engine), replaced on each
//!   accepted config from the controller;
//! - [`inbound`]: the HBONE server's handler: caller, target, protocol, HTTP serving;
//! - [`detect`]: telling HTTP/2 prior knowledge, HTTP/1.1 and opaque bytes apart;
//! - [`serving`]: serving HTTP on one tunnel within the deadlines and bounds of
//!   [`hbone::ServerLimits`], counting what they end;
//! - [`passthrough`]: TCP ports, spliced to an endpoint with L4 policy only;
//! - [`outbound`]: [`engine::UpstreamClient`](crate::engine::UpstreamClient) over HBONE,
//!   with [`http_pool`] keeping HTTP connections to endpoints over the byte streams of
//!   [`io`];
//! - [`upgrade`]: HTTP/1.1 upgrades and HTTP/2 extended CONNECT, relayed as bytes after a
//!   101 (`Upgrade: h2c` refused by serving the request as plain HTTP/1.1);
//! - [`hop`]: what changes at each hop regardless of config (hop-by-hop headers, URI form);
//! - [`server`]: the HBONE listener with the waypoint's certificate, rotated live, and the
//!   same limits.
//!
//! Layers, each importing only from those before it (and from the engine, never the other way
//! round): `io`, `hop`, `detect`, `config_store`, `serving`; then `http_pool`, `upgrade`; `outbound`;
//! `passthrough`; `inbound`; `server`. This file only declares and re-exports.

pub mod config_store;
pub mod detect;
pub mod hop;
pub mod http_pool;
pub mod inbound;
pub mod io;
pub mod outbound;
pub mod passthrough;
pub mod server;
pub mod serving;
pub mod upgrade;

pub use config_store::ConfigStore;
pub use inbound::{Inbound, InboundSettings};
pub use outbound::{HboneUpstream, UpstreamSettings};
pub use server::{ServeError, serve_hbone};
