//! Wire formats of the mesh, generated at build time from the `.proto`
//! files in `proto/` (no system `protoc` needed):
//!
//! - [`workload`]: Istio workload API (`istio.workload`), served to node
//!   proxies as [`ADDRESS_TYPE_URL`] resources;
//! - [`security`]: Istio L4 authorization (`istio.security`), served as
//!   [`AUTHORIZATION_TYPE_URL`] resources;
//! - [`discovery`], [`core`], [`rpc`]: Envoy xDS (delta and
//!   state-of-the-world ADS) with the parts of its core types it needs;
//! - [`ca`]: Istio's `IstioCertificateService`;
//! - [`zds`]: the node agent to node proxy protocol;
//! - [`waypoint`]: the mesh's own waypoint configuration
//!   (`mesh.waypoint.v1`), served as [`WAYPOINT_TYPE_URL`] resources;
//! - [`trust`]: the mesh's trust bundle (`mesh.ca.v1`), served as
//!   [`TRUST_BUNDLE_TYPE_URL`] resources;
//! - [`telemetry`]: the node proxies' access log switches (`mesh.telemetry.v1`);
//! - [`echo`]: the gRPC test app's `Echo` service (`mesh.echo.v1`), with the
//!   four call kinds;
//! - [`otlp`]: OpenTelemetry's trace export (OTLP over gRPC), which
//!   waypoints send spans with.
//!
//! Field numbers, names and packages of the upstream types match their
//! definitions, so these types interoperate with Istio and Envoy components.

#![deny(missing_docs)]

#[allow(
    // `Address` holds a `Workload` or a much smaller `Service` inline;
    // boxing would change the generated API for no measurable gain.
    clippy::large_enum_variant
)]
mod generated;

mod any;
pub mod grpc_timeout;

pub use any::{
    ACCESS_LOGGING_NAME, ACCESS_LOGGING_TYPE_URL, ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL,
    TRUST_BUNDLE_NAME, TRUST_BUNDLE_TYPE_URL, WAYPOINT_TYPE_URL, pack, unpack,
};

/// Re-exported so dependents use the same prost as the generated code.
pub use prost;
/// Re-exported so dependents use the same well-known types (`Any`,
/// `Struct`, `Duration`) as the generated code.
pub use prost_types;

/// Istio workload API (`istio.workload`): [`workload::Address`] is a
/// [`workload::Workload`] or a [`workload::Service`].
pub use generated::istio::workload;

/// Istio L4 authorization (`istio.security`): [`security::Authorization`].
pub use generated::istio::security;

/// Envoy discovery (`envoy.service.discovery.v3`): delta and
/// state-of-the-world requests and responses, and the ADS client and server
/// in `aggregated_discovery_service_client` / `_server`.
pub use generated::envoy::service::discovery::v3 as discovery;

/// Envoy core types (`envoy.config.core.v3`): [`core::Node`] and friends.
pub use generated::envoy::config::core::v3 as core;

/// The gRPC error model (`google.rpc`): [`rpc::Status`].
pub use generated::google::rpc;

/// Istio CA (`istio.v1.auth`): certificate requests and the
/// `IstioCertificateService` client and server.
pub use generated::istio::v1::auth as ca;

/// ZDS (`istio.workload.zds`): messages between the node agent and the node
/// proxy over a unix SEQPACKET socket.
pub use generated::istio::workload::zds;

/// Waypoint configuration (`mesh.waypoint.v1`): one [`waypoint::Waypoint`]
/// per waypoint, with its services' routes, upstream policies, rate limits
/// and the authorization policies it enforces.
pub use generated::mesh::waypoint::v1 as waypoint;

/// The node proxies' access log switches (`mesh.telemetry.v1`): one
/// [`telemetry::AccessLogging`] named [`ACCESS_LOGGING_NAME`], served as
/// [`ACCESS_LOGGING_TYPE_URL`] resources.
pub use generated::mesh::telemetry::v1 as telemetry;

/// The trust bundle (`mesh.ca.v1`): one [`trust::TrustBundle`] named
/// [`TRUST_BUNDLE_NAME`], served as [`TRUST_BUNDLE_TYPE_URL`] resources.
pub use generated::mesh::ca::v1 as trust;

/// The gRPC test app (`mesh.echo.v1`): the `Echo` service with unary, server-,
/// client- and bidirectional streaming calls, its client in `echo_client` and its
/// server in `echo_server`.
pub use generated::mesh::echo::v1 as echo;

/// OpenTelemetry trace export (OTLP): spans, their attributes and resource,
/// and the `TraceService` client and server in
/// [`otlp::collector::trace_service_client`] / `_server`.
pub mod otlp {
    pub use crate::generated::opentelemetry::proto::collector::trace::v1 as collector;
    pub use crate::generated::opentelemetry::proto::common::v1 as common;
    pub use crate::generated::opentelemetry::proto::resource::v1 as resource;
    pub use crate::generated::opentelemetry::proto::trace::v1 as trace;
}
