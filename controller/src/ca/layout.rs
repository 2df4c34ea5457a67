//! The file names of Istio's plug-in CA layout, shared by the CA folder, the Kubernetes
//! Secrets and the errors that name them.

/// Self-signed root certificate (also the published trust bundle).
pub const ROOT_CERT: &str = "root-cert.pem";
/// Key of a generated self-signed root.
pub const ROOT_KEY: &str = "root-key.pem";
/// Plugged-in signing certificate (an intermediate).
pub const CA_CERT: &str = "ca-cert.pem";
/// Key of the plugged-in signing certificate.
pub const CA_KEY: &str = "ca-key.pem";
/// Chain from the plugged-in certificate up towards the root.
pub const CERT_CHAIN: &str = "cert-chain.pem";
