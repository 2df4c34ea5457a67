//! What the test servers share: binding, and accepting a bounded number of connections.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

use super::error::AppError;

/// Most connections a test server serves at once; further clients wait in
/// the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;

/// Listens on `port` on all IPv4 addresses (pods in the sandbox are IPv4).
pub(super) async fn bind(port: u16) -> Result<TcpListener, AppError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Pause after a failed accept (typically EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Accepts connections while holding at most [`MAX_CONNECTIONS`] at once: each connection comes
/// with the permit that frees its slot when dropped. Returns `None` once `shutdown` completes.
pub(super) async fn accept_bounded<F: std::future::Future<Output = ()>>(
    app: &str,
    listener: &TcpListener,
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
)> {
    let permit = tokio::select! {
        permit = slots.clone().acquire_owned() => permit.ok()?,
        () = shutdown.as_mut() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((permit, stream, peer)),
                Err(e) => {
                    tracing::warn!("{app} accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}
