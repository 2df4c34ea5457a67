//! Tracing and Istio's Telemetry on the sandbox: the OTLP receiver app on its own
//! ([`receiver`]), spans from the waypoint for the demo's request chain ([`waypoint`]), and
//! ztunnel's access log switched off per namespace ([`ztunnel_access_log`]).

#[path = "tracing/receiver.rs"]
mod receiver;
#[path = "tracing/waypoint.rs"]
mod waypoint;
#[path = "tracing/ztunnel_access_log.rs"]
mod ztunnel_access_log;
