//! Accepting on a pod's listeners and connecting to upstreams from inside the pod.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use super::error::ProxyError;
use super::netns::PodNetns;
use super::socket;

/// Longest wait for a plain TCP connect to an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` yields is dropped at once: it must not live across an await.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accepts connections on `listener` until `stop` turns true, handing each (with the client's
/// canonical address) to `accepted`, which must not block.
pub(crate) async fn accept_until_stopped(
    listener: &TcpListener,
    mut stop: watch::Receiver<bool>,
    listener_name: &str,
    mut accepted: impl FnMut(TcpStream, SocketAddr),
) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            result = listener.accept() => match result {
                Ok((stream, peer)) => accepted(stream, socket::canonical(peer)),
                Err(e) => {
                    // Typically out of descriptors: back off rather than spin.
                    warn!(error = %e, listener = listener_name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Connects to `addr` from inside the pod (from `source` when given), giving up after
/// [`CONNECT_TIMEOUT`].
pub(crate) async fn connect_upstream(
    netns: &PodNetns,
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, socket::connect(netns, addr, source)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(ProxyError::Connect { addr, source }),
        Err(_elapsed) => Err(ProxyError::Connect {
            addr,
            source: io::ErrorKind::TimedOut.into(),
        }),
    }
}
