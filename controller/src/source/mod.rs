//! Sources of config: each one feeds whole contributions into a
//! [`crate::model::Index`].
//!
//! - [`files`]: folders of manifests (local mode, the sandbox);
//! - [`kube`]: the Kubernetes API (`--kubernetes`).

pub mod files;
pub mod kube;

pub use files::{FileSource, ScanResult};
pub use kube::{KubeSettings, KubeSource};

/// Errors reading a source. They become [`crate::model::Problem`]s: a source
/// never stops because one file is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not UTF-8 text.
    #[error("{path}: not UTF-8 text")]
    NotText {
        /// The path.
        path: String,
    },
}
