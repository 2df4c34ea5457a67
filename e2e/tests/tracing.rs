//! Tracing on the sandbox: the OTLP receiver app on its own ([`receiver`]), and spans from
//! the waypoint for the demo's request chain ([`waypoint`]).

#[path = "tracing/receiver.rs"]
mod receiver;
#[path = "tracing/waypoint.rs"]
mod waypoint;
