//! The error type of the built-in test apps.

use std::io;

/// Everything that can go wrong in a test app.
///
/// [`AppError::exit_code`] maps each kind to curl's exit codes, so scripts
/// that already know curl can tell a refused connection from a timeout.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// A command-line argument is not usable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A URL is not an `http://` URL we can connect to.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TCP connection to the target failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port` we tried.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// HTTP protocol failure (handshake, send, or response).
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    /// A request could not be built from the given parts.
    #[error("cannot build request: {0}")]
    Request(#[from] http::Error),
    /// Reading a body failed, or it exceeded the cap.
    #[error("response body: {0}")]
    Body(String),
    /// The operation did not finish in time.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// `curl --fail` got a non-2xx status.
    #[error("the server answered HTTP {0}")]
    HttpStatus(u16),
    /// A gRPC call ended with a status other than OK.
    #[error("the server answered gRPC status {code}: {message}")]
    GrpcStatus {
        /// The status code.
        code: i32,
        /// The status message.
        message: String,
    },
    /// JSON encoding failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Local I/O failure (stdout, sockets after setup).
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl AppError {
    /// A process exit code for this error, following curl's numbering where
    /// one exists (6/7 connect, 22 HTTP status, 28 timeout), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::InvalidUrl { .. } => 3,
            AppError::Connect { .. } => 7,
            AppError::HttpStatus(_) | AppError::GrpcStatus { .. } => 22,
            AppError::Timeout(_) => 28,
            AppError::Http(_) | AppError::Body(_) => 56,
            _ => 1,
        }
    }
}
