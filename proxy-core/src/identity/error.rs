//! Why a certificate could not be obtained.

/// Why a certificate could not be obtained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The CA refused or failed.
    #[error("CA: {0}")]
    Ca(String),
    /// The response did not hold a usable certificate.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The identity was released (its last pod left) while the request was waiting.
    #[error("identity {0} is no longer kept")]
    Released(String),
}
