//! The seam between the certificate manager and the CA that signs.

use std::time::Duration;

use hbone::Identity;

use super::error::IdentityError;

/// Signs certificate requests: the controller's CA in production ([`CaClient`]).
#[tonic::async_trait]
pub trait CertificateSigner: Send + Sync + 'static {
    /// Asks for `csr_pem` to be signed as `identity` for `ttl`; returns the PEM chain leaf
    /// first, roots last.
    async fn sign(
        &self,
        identity: &Identity,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<Vec<String>, IdentityError>;
}
