//! Why a proxied connection failed, and how that is answered and reported.

use std::io;
use std::net::SocketAddr;

use http::StatusCode;
use proxy_core::labels;

use super::resolve;

/// Why a proxied connection failed; mapped to an HBONE status and a response flag at the
/// edges.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The CONNECT asked for an address that is not this pod's (confused deputy).
    #[error("authority {0} is not an address of this pod")]
    AuthorityMismatch(SocketAddr),
    /// The destination is one of the proxy's own ports.
    #[error("destination port {0} is the proxy's own")]
    SelfCall(u16),
    /// This pod's workload is not (yet) known from the controller.
    #[error("this pod's workload is not known")]
    UnknownWorkload,
    /// Authorization denied the connection.
    #[error("denied: {0}")]
    Denied(String),
    /// The upstream could not be reached.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The redirected connection has no original destination.
    #[error("no original destination: {0}")]
    OriginalDestination(io::Error),
    /// The destination cannot be resolved.
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// No certificate for this pod.
    #[error("certificate: {0}")]
    Certificate(#[from] proxy_core::identity::IdentityError),
    /// The HBONE tunnel could not be opened.
    #[error("HBONE: {0}")]
    Hbone(#[from] hbone::Error),
}

impl ProxyError {
    /// The status an HBONE CONNECT failing this way is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::AuthorityMismatch(_) => StatusCode::BAD_REQUEST,
            ProxyError::Denied(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `response_flags` label of a connection failing this way.
    pub fn response_flag(&self) -> &'static str {
        match self {
            ProxyError::Denied(_) => labels::DENIED,
            ProxyError::Hbone(e) if e.is_denied() => labels::DENIED,
            ProxyError::Resolve(e) => e.response_flag(),
            _ => labels::CONNECT_FAILED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_istio_statuses_and_flags() {
        let mismatch = ProxyError::AuthorityMismatch("10.0.0.9:80".parse().unwrap());
        assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
        let denied = ProxyError::Denied("shop/deny".into());
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(denied.response_flag(), "DENY");
        let connect = ProxyError::Connect {
            addr: "10.0.0.9:80".parse().unwrap(),
            source: io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(connect.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(connect.response_flag(), "CONNECT");
        assert_eq!(
            ProxyError::SelfCall(15001).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let refused = ProxyError::Hbone(hbone::Error::Status(StatusCode::UNAUTHORIZED));
        assert_eq!(refused.response_flag(), "DENY");
    }
}
