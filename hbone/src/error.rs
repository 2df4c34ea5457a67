//! Errors of the HBONE client and server.

use std::io;
use std::net::SocketAddr;

use http::StatusCode;

use crate::cert::CertError;

/// Why a tunnel could not be opened or served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection to the peer failed.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The peer's HBONE address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake failed (including certificate or identity rejection).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// The peer's address.
        addr: SocketAddr,
        /// The handshake error; its inner error is the rustls verdict.
        source: io::Error,
    },
    /// The peer did not agree to speak HTTP/2.
    #[error("peer {0} did not negotiate ALPN h2")]
    NoH2(SocketAddr),
    /// An HTTP/2 protocol or stream error.
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The peer answered the CONNECT with a non-200 status.
    #[error("peer refused the tunnel with status {0}")]
    Status(StatusCode),
    /// The pool could not get a usable connection after retrying.
    #[error("no usable connection to {0}: {1}")]
    Unavailable(SocketAddr, String),
    /// A step took longer than allowed.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The local certificate or TLS configuration is unusable.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The local certificate is unusable.
    #[error(transparent)]
    Certificate(#[from] CertError),
}

impl Error {
    /// Whether the peer refused the tunnel on authorization grounds (401 or 403).
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Status(s) if *s == StatusCode::UNAUTHORIZED || *s == StatusCode::FORBIDDEN)
    }

    /// The HTTP status the peer answered with, if the failure was a refusal.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status(s) => Some(*s),
            _ => None,
        }
    }
}
