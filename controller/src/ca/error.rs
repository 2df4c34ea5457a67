//! Errors of the CA outside request handling.

use std::path::{Path, PathBuf};

use hbone::CertError;

use super::layout::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT};

/// Errors of the CA outside request handling (which answers with gRPC statuses).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA directory holds only one of the root's certificate and key.
    #[error(
        "{0} holds only one of root-cert.pem and root-key.pem; refusing to generate a new root over it"
    )]
    Incomplete(PathBuf),
    /// A certificate or key is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The plugged-in CA material in a folder is unusable.
    #[error("plugged-in CA in {dir} ({CA_CERT}, {CA_KEY}, {CERT_CHAIN}, {ROOT_CERT}): {source}")]
    PluggedIn {
        /// The CA folder.
        dir: PathBuf,
        /// What is wrong with it.
        source: CertError,
    },
    /// A Kubernetes Secret holding the CA could not be read or written.
    #[error("Secret {secret}: {source}")]
    Kubernetes {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The API error.
        source: Box<kube::Error>,
    },
    /// A Kubernetes Secret holding the CA is incomplete or unreadable.
    #[error("Secret {secret}: {reason}")]
    BadSecret {
        /// `namespace/name` of the Secret.
        secret: String,
        /// What is wrong.
        reason: String,
    },
    /// CA material given by file name lacks one.
    #[error("{0} is missing")]
    Missing(String),
    /// A rotation's record is in phase 3, yet the material it installs is not staged.
    #[error("the staged CA material is missing")]
    StagedMissing,
    /// The authority's lock was poisoned by a panic.
    #[error("CA state lock poisoned")]
    Poisoned,
}

impl CaError {
    pub(super) fn io(path: &Path, source: std::io::Error) -> Self {
        CaError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
