//! Traffic objects → waypoint configuration (`mesh.waypoint.v1.Waypoint`).
//!
//! Each object is decoded and translated on its own into what it
//! contributes (routes, a split, a policy, a rate limit); an invalid object
//! is reported and its last good contribution stays in force. The
//! contributions are then assembled per waypoint, for every service it
//! serves, with this precedence for routes:
//!
//! 1. HTTPRoute and GRPCRoute attached to the Service (all of them, ranked
//!    by the Gateway API rules);
//! 2. else the oldest VirtualService naming the service;
//! 3. else a default route to the service, or to the weighted backends of
//!    the oldest TrafficSplit, or of the ServiceProfile's dstOverrides;
//!    the ServiceProfile's routes come first, forwarding to the same
//!    destinations with their own timeouts and retries.
//!
//! TCPRoutes give the ports they attach to weighted TCP backends (`tcp_assemble`); a port an
//! HTTPRoute or GRPCRoute routes stays theirs.
//!
//! DestinationRules and ServiceProfile retry budgets become the upstream
//! policy of every service a waypoint serves or sends to; rate limits come
//! from the `mesh.io/rate-limit` Service annotation, else from EnvoyFilters.

mod assemble;
mod catalog;
mod destination_rule;
mod gateway_api;
mod gateway_filters;
mod parts;
mod rate_limit;
mod service_profile;
mod sources;
mod tcp_assemble;
mod tcp_route;
mod traffic_split;
mod values;
mod virtual_service;

pub(crate) use assemble::{Assembly, assemble};
pub(crate) use catalog::{Catalog, Invalid, Obj};
pub(crate) use parts::exact as exact_match;
pub use rate_limit::RATE_LIMIT_ANNOTATION;
pub(crate) use sources::{RouteMemory, collect};
