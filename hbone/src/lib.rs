//! HBONE: the mesh's data-plane tunnel.
//!
//! A tunnel is an HTTP/2 `CONNECT` stream inside mutual TLS between two SPIFFE workload
//! identities, as Istio's ztunnel speaks it on port 15008. This crate holds the pieces both
//! ends share:
//!
//! - [`Identity`], of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`;
//! - [`WorkloadCertificate`], [`CertificateRequest`] and the signing [`Authority`];
//! - [`tls`]: TLS 1.3-only rustls configurations that verify identities instead of hostnames;
//! - [`Pool`]: the client, multiplexing tunnels over few connections;
//! - [`Server`]: accepts tunnels and lets a [`ConnectHandler`] answer each one, within the
//!   [`ServerLimits`] it puts on every peer.

pub mod ca;
pub mod cert;
pub mod client;
pub mod crypto;
pub mod error;
pub mod forwarded;
pub mod frames;
pub mod identity;
pub mod limits;
pub mod names;
pub mod pool;
pub mod server;
pub mod settings;
pub mod stream;
pub mod tls;

pub use ca::Authority;
pub use cert::{CertError, CertificateRequest, WorkloadCertificate};
pub use client::{ConnectRequest, SocketFactory, Upstream};
pub use error::Error;
pub use identity::{Identity, IdentityError};
pub use limits::{Limit, LimitCounters, ServerLimits};
pub use names::ServingName;
pub use pool::{Pool, PoolSettings};
pub use server::{ConnectHandler, DrainReport, IncomingConnect, Server, TlsUpdater};
pub use stream::TunnelStream;

/// The port HBONE listens on.
pub const HBONE_PORT: u16 = 15008;
