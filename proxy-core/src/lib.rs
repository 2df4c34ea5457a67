//! What both mesh proxies (ztunnel's proxy role and the waypoint) share.
//!
//! - [`control`]: the gRPC channel to the controller (TLS 1.3, its identity checked, a bearer
//!   token); [`xds`]: the delta ADS client on it, applying workloads, services and policies to
//!   the mesh [`state`] and handing named subscriptions to their handlers;
//! - [`identity`]: certificates from the controller's CA, per identity, rotated;
//! - [`admin`], [`readiness`], [`telemetry`]: the admin endpoints (`/config_dump`,
//!   `/metrics`, `/healthz/ready`), readiness conditions and Istio's metrics;
//! - [`connections`], [`labels`]: the relay of a proxied connection, the registry of live
//!   ones, and the telemetry labels of a connection's peers;
//! - [`config`], [`shutdown`]: the settings and flags both proxies take, and their signals.

pub mod admin;
pub mod connections;
pub mod control;
pub mod identity;
pub mod labels;
pub mod learned_roots;
pub mod memory;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod state;
pub mod tap;
pub mod telemetry;
pub mod xds;
