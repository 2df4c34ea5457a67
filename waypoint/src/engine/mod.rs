//! The request pipeline, independent of how bytes arrive or leave: it is given a request, the
//! service and port it was addressed to and who sent it, and an [`UpstreamClient`] to send
//! to.
//!
//! [`Engine::handle`] runs, in order: find the served service (the target VIP, from the
//! config or [`UpstreamClient::service_by_vip`]; a target this waypoint does not serve is
//! answered 404 with flag NR rather than forwarded, so the waypoint never relays traffic its
//! config does not cover), L7 authorization (403), the service's rate limit (429), route matching (first
//! match; none: 404 NR), redirect or direct answer, fault injection, the weighted choice of
//! destination, then attempts: endpoint choice (subset, outlier ejection, load balancer),
//! workload-scoped authorization, connection-pool admission, the exchange with per-try and
//! route timeouts, and retries within the policy and budget. Mirrors are sent on the side.
//! A failure the client caused (a malformed or abandoned body, a body too slow to arrive) is
//! answered for the client and never counted against the upstream.
//!
//! Modules: [`config`] compiles the proto once per version; [`matching`], [`headers`],
//! [`select`], [`endpoints`], [`balance`], [`pool`], [`outlier`], [`retry`], [`fault`],
//! [`ratelimit`], [`authz`], [`mirror`], [`body`], [`downstream`] and [`telemetry`] each
//! hold one concern; [`runtime`] keeps what outlives a config version. What a request
//! derives from the mesh state (candidate endpoints, workload labels) is kept until
//! [`UpstreamClient::state_version`] changes.
//!
//! This file only declares the modules and re-exports the public surface: no module of the
//! engine imports it, and the types every stage shares live in modules of their own
//! ([`body`], [`compile`], [`origin`], [`upstream`]).

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
mod telemetry;
mod upstream;

#[cfg(test)]
mod tests;

pub use body::{Body, BoxError};
pub use compile::ConfigError;
pub use compiled::Engine;
pub use origin::{Caller, Target};
pub use runtime::Runtime;
pub use upstream::{
    EndpointInfo, SendFuture, UpstreamClient, UpstreamError, UpstreamHints, WorkloadMeta,
};
