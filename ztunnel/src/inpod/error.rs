//! Why a ZDS request failed.

/// Why a ZDS request failed.
#[derive(Debug, thiserror::Error)]
pub enum InpodError {
    /// The request broke the protocol; the connection is closed after answering.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A pod's proxy could not start; it is retried later, the connection stays.
    #[error("starting the proxy of pod {uid}: {reason}")]
    Start {
        /// Pod uid.
        uid: String,
        /// Why.
        reason: String,
    },
    /// The ZDS socket failed.
    #[error("ZDS connection: {0}")]
    Io(#[from] std::io::Error),
}
