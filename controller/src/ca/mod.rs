//! The mesh's certificate authority: Istio's `IstioCertificateService/CreateCertificate`.
//!
//! - [`store`]: the signing root, generated on first start and persisted, or plugged in;
//! - [`secret_store`]: the same, kept in Kubernetes Secrets (`--kubernetes`);
//! - [`auth`]: bearer-token authentication shared with the xDS server;
//! - [`tokenreview`]: Kubernetes service account tokens as bearer tokens;
//! - [`policy`]: who may have which identity, and for how long;
//! - [`rotation`]: a root rotation's persisted phase and what each phase writes;
//! - [`rotation_store`]: where the rotation lives (the CA folder, or in Kubernetes
//!   [`rotation_secret`]'s Secrets);
//! - [`CaService`]: the gRPC service tying them together.

pub mod auth;
mod authority;
mod error;
mod layout;
pub mod metrics;
pub mod policy;
pub mod rotation;
pub mod rotation_secret;
pub mod rotation_store;
pub mod secret_store;
pub mod secret_watch;
mod service;
pub mod store;
pub mod tokenreview;

pub use authority::{CertificateAuthority, Expiries};
pub use error::CaError;
pub use policy::NodeDirectory;
pub use service::{CaService, CaSettings};
pub use store::Origin;
