//! Engine-level tests: real requests through [`Engine::handle`](super::Engine::handle) against
//! an in-process fake of the transport (the [`UpstreamClient`](super::UpstreamClient)
//! boundary).

mod cfg;
mod controller;
mod cost;
mod downstream;
mod fake;
mod policy;
mod resilience;
mod route_metrics;
mod routing;
mod tracing;
mod upgrades;
mod xfcc;
