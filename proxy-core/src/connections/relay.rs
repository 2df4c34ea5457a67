//! The relay of a proxied connection: both ways until both sides are done, counted, and cut
//! when the connection's registry says so.

use std::any::Any;

use tokio::io::{AsyncRead, AsyncWrite};

use super::copy::Relay;
use super::registry::{CloseReason, Tracked};

/// How a relayed connection ended.
#[derive(Debug, Default)]
pub struct Relayed {
    /// Bytes from the client side to the server side.
    pub sent: u64,
    /// Bytes from the server side to the client side.
    pub received: u64,
    /// An I/O error that ended it, if any.
    pub error: Option<String>,
    /// Set when the connection was cut (policy or drain).
    pub cut: Option<CloseReason>,
}

impl Relayed {
    /// A connection cut before any byte flowed.
    pub fn cut(reason: CloseReason) -> Self {
        Self {
            cut: Some(reason),
            ..Self::default()
        }
    }
}

/// Copies bytes both ways between `client` and `server` until both directions finish
/// (half-closes are passed on), an error occurs, or `tracked` is told to close.
pub async fn relay<C, S>(client: C, server: S, tracked: &Tracked) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin + Any,
    S: AsyncRead + AsyncWrite + Unpin + Any,
{
    let copied = relay_until(client, server, tracked.closed()).await;
    Relayed {
        sent: copied.sent,
        received: copied.received,
        error: copied.error,
        cut: copied.stopped,
    }
}

/// How [`relay_until`] ended.
#[derive(Debug)]
pub struct Copied<T> {
    /// Bytes from the client side to the server side.
    pub sent: u64,
    /// Bytes from the server side to the client side.
    pub received: u64,
    /// An I/O error that ended it, if any.
    pub error: Option<String>,
    /// What `stop` resolved to, when it ended the relay.
    pub stopped: Option<T>,
}

/// The copy of [`relay`] for connections no registry tracks (an upgraded HTTP connection,
/// say): both ways until both directions finish (half-closes passed on), an error occurs, or
/// `stop` resolves first.
pub async fn relay_until<C, S, T>(client: C, server: S, stop: impl Future<Output = T>) -> Copied<T>
where
    C: AsyncRead + AsyncWrite + Unpin + Any,
    S: AsyncRead + AsyncWrite + Unpin + Any,
{
    let mut relay = Relay::new(client, server);
    let (error, stopped) = tokio::select! {
        copied = &mut relay => (copied.err().map(|e| e.to_string()), None),
        reason = stop => (None, Some(reason)),
    };
    Copied {
        sent: relay.up.read,
        received: relay.down.written,
        error,
        stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::LiveConnections;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relay_counts_bytes_each_way_and_passes_half_closes() {
        let registry = LiveConnections::new();
        let tracked = registry.register(None);
        assert_eq!(registry.len(), 1);
        let (client_app, client_proxy) = tokio::io::duplex(1024);
        let (server_proxy, server_app) = tokio::io::duplex(1024);
        let relay = tokio::spawn(async move {
            let out = relay(client_proxy, server_proxy, &tracked).await;
            drop(tracked);
            out
        });
        let (mut client_app, mut server_app) = (client_app, server_app);
        client_app.write_all(b"hello").await.unwrap();
        client_app.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_app.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        server_app.write_all(b"world!!").await.unwrap();
        server_app.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_app.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!!");
        let out = relay.await.unwrap();
        assert_eq!((out.sent, out.received), (5, 7));
        assert!(out.error.is_none() && out.cut.is_none());
        registry.wait_empty().await;
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn close_all_cuts_live_connections() {
        let registry = LiveConnections::new();
        let tracked = registry.register(None);
        let (_client_app, client_proxy) = tokio::io::duplex(64);
        let (server_proxy, _server_app) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move { relay(client_proxy, server_proxy, &tracked).await });
        registry.close_all(CloseReason::Drain);
        let out = relay.await.unwrap();
        assert_eq!(out.cut, Some(CloseReason::Drain));
        registry.wait_empty().await;
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_relay_with_its_error() {
        let registry = LiveConnections::new();
        let tracked = registry.register(None);
        let (mut client_app, client_proxy) = tokio::io::duplex(64);
        let (server_proxy, server_app) = tokio::io::duplex(64);
        drop(server_app);
        client_app.write_all(b"lost").await.unwrap();
        let out = relay(client_proxy, server_proxy, &tracked).await;
        assert!(out.error.is_some(), "{out:?}");
        assert!(out.cut.is_none());
        assert_eq!((out.sent, out.received), (4, 0));
    }
}
