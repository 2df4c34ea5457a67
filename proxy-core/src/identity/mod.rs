//! Workload certificates for the service accounts of this node's pods, requested from the
//! controller's CA with `ImpersonatedIdentity`, prefetched, rotated at half-life with jitter,
//! retried with backoff, at most 8 requests in flight.
//!
//! - [`CertManager`]: one current certificate per identity, shared by every connection;
//! - [`CaClient`]: Istio's `IstioCertificateService/CreateCertificate` over the controller
//!   channel, behind the [`CertificateSigner`] seam.

mod bundle;
mod client;
mod dump;
mod entries;
mod error;
mod manager;
pub mod metrics;
mod signer;
mod worker;

pub use client::CaClient;
pub use error::IdentityError;
pub use manager::{CertManager, CertSettings};
pub use signer::CertificateSigner;

#[cfg(test)]
mod tests;
