//! Sources of config: each one feeds whole contributions into a
//! [`crate::model::Index`].
//!
//! - [`files`]: folders of manifests (local mode, the sandbox);
//! - [`kube`]: the Kubernetes API (`--kubernetes`).

mod error;
pub mod files;
pub mod kube;

pub use error::SourceError;
pub use files::{FileSource, ScanResult};
pub use kube::{KubeSettings, KubeSource};
