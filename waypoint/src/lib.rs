//! The waypoint: the per-namespace L7 proxy of the ambient mesh.
//!
//! - [`transport`]: HBONE in (the waypoint's own identity; the original destination from
//!   `:authority`), HTTP/1.1 or HTTP/2 detected per connection, TCP pass-through for services
//!   declared TCP; HBONE out to the chosen endpoint; the controller's config over delta xDS.
//! - [`engine`]: what happens to one request: L7 authorization, rate limiting, route matching,
//!   fault injection, retries and timeouts, load balancing with connection-pool limits and
//!   outlier detection, mirroring, header rewriting, request telemetry.
//! - [`app`]: the wiring of both, with the controller channel and the admin endpoints.
//!
//! The engine imports neither of the others: the transport implements its
//! [`UpstreamClient`](engine::UpstreamClient) and hands it requests; the app imports both.

pub mod app;
pub mod engine;
pub mod transport;
