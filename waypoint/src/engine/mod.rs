//! The request pipeline, independent of how bytes arrive or leave: it is given a request, the
//! service and port it was addressed to and who sent it, and an [`UpstreamClient`] to send
//! to. It never imports the transport; the transport implements [`UpstreamClient`].
//!
//! [`Engine::handle`] runs, in order: find the served service (the target VIP, from the
//! config or [`UpstreamClient::service_by_vip`]; a target this waypoint does not serve is
//! answered 404 with flag NR rather than forwarded, so the waypoint never relays traffic its
//! config does not cover), L7 authorization (403), the service's rate limit (429), route
//! matching (first match; none: 404 NR), fault injection, redirect or direct answer, the
//! weighted choice of destination, then attempts: endpoint choice (subset, outlier
//! ejection, load balancer), workload-scoped authorization, connection-pool admission, the
//! exchange with per-try and route timeouts, and retries within the policy and budget.
//! Mirrors are sent on the side (never for an upgrade request, whose 101 the transport then
//! relays; its record is written when that relay ends). A failure the client caused (a malformed or abandoned body,
//! a body too slow to arrive) is answered for the client and never counted against the
//! upstream. What a request derives from the mesh state (candidate endpoints, workload
//! labels) is kept until [`UpstreamClient::state_version`] changes.
//!
//! The modules form layers; a module imports only from lower layers, or from modules listed
//! before it in its own layer:
//!
//! 1. What every stage shares: `body` (the body type, replayable bodies), `compile`
//!    ([`ConfigError`], protobuf conversions), `origin` ([`Caller`], [`Target`]),
//!    `upstream` (the [`UpstreamClient`] boundary and the types crossing it), `upgrade`
//!    (what makes a request an upgrade; the bytes relayed after a 101), `tcp_route` (a
//!    port's weighted TCP backends and the pick per connection).
//! 2. One concern each: `matching`, `downstream` (the client's side of a body), `trace`
//!    (trace context in and out, spans and their export),
//!    `telemetry` (its `record`, `labels` and `access` log below it), `headers`,
//!    `authz`, `fault`, `pool`, `ratelimit`, `retry`, `outlier`, `balance`, `xfcc` (the
//!    client identity header).
//! 3. State that outlives a config version: `runtime`, then `endpoints` (each
//!    destination's candidate lists).
//! 4. The compiled config: `config` (proto → tables, once per version), then `select`
//!    (weighted destination, endpoint policy).
//! 5. The engine and a request's bookkeeping: `compiled` ([`Engine`]: a compiled config
//!    with its runtime state; connection checks), `context` (what a request is handled
//!    with, and what is recorded about it), `reply` (the waypoint's own answers).
//! 6. The request flow: `mirror`, `forward` (the attempt loop), `handle`
//!    ([`Engine::handle`]).
//!
//! This file only declares the modules and re-exports the public surface: no module of the
//! engine imports it.

mod authz;
mod balance;
mod body;
mod compile;
mod compiled;
mod config;
mod context;
mod downstream;
mod endpoints;
mod fault;
mod forward;
mod handle;
mod headers;
mod matching;
mod mirror;
mod origin;
mod outlier;
mod pool;
mod ratelimit;
mod reply;
mod retry;
mod runtime;
mod select;
mod tcp_route;
mod telemetry;
mod trace;
mod upgrade;
mod upstream;
mod workload_limits;
mod xfcc;

#[cfg(test)]
mod tests;

pub use body::{Body, BoxError};
pub use compile::ConfigError;
pub use compiled::Engine;
#[doc(hidden)]
pub use headers::identify_request;
pub use origin::{Caller, Target};
pub use runtime::Runtime;
pub use tcp_route::{TcpBackend, TcpChoice};
pub use upgrade::{UpgradedBytes, upgrade_protocol};
pub use upstream::{
    EndpointInfo, SendFuture, UpstreamClient, UpstreamError, UpstreamHints, WorkloadMeta,
};
