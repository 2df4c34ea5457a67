//! The error of Kubernetes mode: what could not be read, from where.

/// What went wrong talking to a Kubernetes cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No usable kubeconfig or context.
    #[error("cannot use the kubeconfig: {0}")]
    Config(String),
    /// The API server could not be reached, or the request failed on the way.
    #[error("GET {path}: {message}")]
    Request {
        /// The request's path.
        path: String,
        /// What failed.
        message: String,
    },
    /// The API server answered with an error status.
    #[error("GET {path}: the API server answered {status}: {body}")]
    Status {
        /// The request's path.
        path: String,
        /// Its status.
        status: u16,
        /// Its message.
        body: String,
    },
    /// An answer that is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// A local file (manifests given to `analyze`, a scratch folder).
    #[error("{0}")]
    Local(String),
}

/// The result of Kubernetes mode.
pub type Result<T> = std::result::Result<T, ClusterError>;
