//! Live connections of one pod: a registry that counts them, closes them on drain, and
//! re-checks inbound ones against policy whenever the mesh config changes; and the byte
//! copy between the two sides of a proxied connection.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use hbone::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tracing::info;

use crate::state::{AuthzRequest, Decision, ProxyState, Workload};

/// Copy buffer per direction: bounded, and large enough for bulk transfer.
pub const COPY_BUFFER: usize = 32 * 1024;

/// What an inbound connection was authorized with, kept to re-check it later.
#[derive(Clone, Debug)]
pub struct AuthzInputs {
    /// The verified peer identity (None for plaintext).
    pub source_identity: Option<Identity>,
    /// The original client IP.
    pub source_ip: IpAddr,
    /// The local workload connected to.
    pub destination: Arc<Workload>,
    /// The destination port.
    pub destination_port: u16,
}

impl AuthzInputs {
    /// Evaluates these inputs against `state`, with the destination workload refreshed
    /// (its policy bindings may have changed too).
    pub fn authorize(&self, state: &ProxyState) -> Decision {
        let fresh = state.workload_by_uid(&self.destination.uid);
        let destination = fresh.as_deref().unwrap_or(&self.destination);
        state.authorize(&AuthzRequest {
            source_identity: self.source_identity.as_ref(),
            source_ip: self.source_ip,
            destination,
            destination_port: self.destination_port,
        })
    }
}

/// Why a live connection was cut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A policy now denies it.
    Policy(String),
    /// The pod's proxy is draining and its deadline passed.
    Drain,
}

impl CloseReason {
    /// The response flag the cut connection is reported with.
    pub fn response_flag(&self) -> &'static str {
        match self {
            CloseReason::Policy(_) => "DENY",
            CloseReason::Drain => "-",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Policy(policy) => write!(f, "connection closed by policy: {policy}"),
            CloseReason::Drain => f.write_str("connection cut at the drain deadline"),
        }
    }
}

struct Entry {
    authz: Option<AuthzInputs>,
    close: Arc<watch::Sender<Option<CloseReason>>>,
}

/// The live connections of one pod proxy.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    emptied: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Entries stay consistent under the lock even if a holder panicked.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a connection (with its authorization inputs if it is inbound) until the
    /// returned handle is dropped.
    pub fn register(self: &Arc<Self>, authz: Option<AuthzInputs>) -> Tracked {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        lock(&self.entries).insert(
            id,
            Entry {
                authz,
                close: Arc::new(tx),
            },
        );
        Tracked {
            id,
            registry: self.clone(),
            close: rx,
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until no connection is live.
    pub async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before checking, so an emptying in between is not missed.
            emptied.as_mut().enable();
            if self.is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Tells every live connection to close for `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for entry in lock(&self.entries).values() {
            entry.close.send_replace(Some(reason.clone()));
        }
    }

    /// Re-evaluates every inbound connection against `state` and closes those now denied.
    /// Returns how many were closed.
    pub fn recheck(&self, state: &ProxyState) -> usize {
        // Evaluate outside the lock: authorization takes the state's own locks.
        let inbound: Vec<(AuthzInputs, Arc<watch::Sender<Option<CloseReason>>>)> =
            lock(&self.entries)
                .values()
                .filter_map(|e| Some((e.authz.clone()?, e.close.clone())))
                .collect();
        let mut closed = 0;
        for (inputs, close) in inbound {
            if close.borrow().is_some() {
                continue;
            }
            if let Decision::Deny(policy) = inputs.authorize(state) {
                info!(
                    source = %inputs.source_ip,
                    identity = ?inputs.source_identity.as_ref().map(ToString::to_string),
                    destination = %inputs.destination.name,
                    port = inputs.destination_port,
                    %policy,
                    "connection closed by policy"
                );
                close.send_replace(Some(CloseReason::Policy(policy)));
                closed += 1;
            }
        }
        closed
    }
}

/// One live connection; dropping it unregisters the connection.
pub struct Tracked {
    id: u64,
    registry: Arc<Registry>,
    close: watch::Receiver<Option<CloseReason>>,
}

impl Tracked {
    /// Resolves when the connection must be cut, with the reason.
    pub async fn closed(&self) -> CloseReason {
        let mut close = self.close.clone();
        match close.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(CloseReason::Drain),
            // The registry entry is gone only once this handle dropped: unreachable, but a
            // connection whose registry vanished has nothing left to wait for.
            Err(_) => CloseReason::Drain,
        }
    }

    /// Runs `work` unless the connection is cut first.
    pub async fn unless_closed<T>(&self, work: impl Future<Output = T>) -> Result<T, CloseReason> {
        tokio::select! {
            out = work => Ok(out),
            reason = self.closed() => Err(reason),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let now_empty = {
            let mut entries = lock(&self.registry.entries);
            entries.remove(&self.id);
            entries.is_empty()
        };
        if now_empty {
            self.registry.emptied.notify_waiters();
        }
    }
}

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
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut client = Counted {
        inner: client,
        read: sent.clone(),
        written: received.clone(),
    };
    let mut server = server;
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut server,
        COPY_BUFFER,
        COPY_BUFFER,
    );
    let (error, cut) = match tracked.unless_closed(copy).await {
        Ok(Ok(_)) => (None, None),
        Ok(Err(e)) => (Some(e.to_string()), None),
        Err(reason) => (None, Some(reason)),
    };
    Relayed {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        error,
        cut,
    }
}

/// Counts the bytes read from and written to a stream, readable even if the copy is cut.
struct Counted<T> {
    inner: T,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result {
            self.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relay_counts_bytes_each_way_and_passes_half_closes() {
        let registry = Registry::new();
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
        let registry = Registry::new();
        let tracked = registry.register(None);
        let (_client_app, client_proxy) = tokio::io::duplex(64);
        let (server_proxy, _server_app) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move { relay(client_proxy, server_proxy, &tracked).await });
        registry.close_all(CloseReason::Drain);
        let out = relay.await.unwrap();
        assert_eq!(out.cut, Some(CloseReason::Drain));
        registry.wait_empty().await;
    }

    #[test]
    fn reasons_read_well() {
        let policy = CloseReason::Policy("shop/deny-all".into());
        assert_eq!(
            policy.to_string(),
            "connection closed by policy: shop/deny-all"
        );
        assert_eq!(policy.response_flag(), "DENY");
        assert_eq!(CloseReason::Drain.response_flag(), "-");
    }
}
