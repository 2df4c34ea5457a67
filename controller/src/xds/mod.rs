//! The delta ADS server: streams the translated [`Snapshot`](crate::translate::Snapshot) to
//! ztunnels and waypoints over Envoy's incremental aggregated discovery protocol.
//!
//! Each stream follows a `watch` channel of snapshots. Changes are debounced, then every
//! subscribed type gets only what changed for that client (upserts and removed names), with
//! a fresh nonce. NACKs are logged and counted; the stream keeps going.

mod clients;
pub mod delta;
pub mod metrics;
mod service;
mod stream;
mod trust_bundle;

pub use clients::{ClientEntry, ClientStatus, Clients, TypeStatus};
pub use service::{XdsServer, XdsSettings};
pub use trust_bundle::serve_with_trust_bundle;
