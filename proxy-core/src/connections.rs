//! Live connections of one pod: a registry that counts them, closes them on drain, and
//! re-checks inbound ones against policy whenever the mesh config changes; and the byte
//! copy between the two sides of a proxied connection.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use hbone::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tracing::info;

use crate::state::{AuthzRequest, Decision, ProxyState, Workload};

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

/// Entries a registry's table keeps room for however few connections are live.
const MIN_REGISTRY_CAPACITY: usize = 64;

/// The live connections of one pod proxy.
#[derive(Default)]
pub struct LiveConnections {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    emptied: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Entries stay consistent under the lock even if a holder panicked.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LiveConnections {
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
    registry: Arc<LiveConnections>,
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
            // A burst of connections leaves its table behind: give it back once mostly empty
            // (halving at a quarter full keeps the cost amortised).
            let live = entries.len();
            if entries.capacity() > MIN_REGISTRY_CAPACITY && live < entries.capacity() / 4 {
                entries.shrink_to(live * 2);
            }
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
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
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

/// First copy buffer of each direction. Most connections carry little at a time, and a node
/// holds many of them: they start small, and hold no buffer at all while idle (a buffer this
/// small is given back whenever the reader has nothing, and taken again on its next read).
const INITIAL_BUFFER: usize = 1024;
/// Largest copy buffer of one direction. A direction whose reads keep filling its buffer
/// doubles it up to this, so bulk transfers move large chunks: fewer reads, writes, HTTP/2
/// frames and wake-ups per byte.
const MAX_BUFFER: usize = 256 * 1024;

/// The two directions of a relayed connection, counting what they move (readable even if
/// the relay is cut midway).
struct Relay<C, S> {
    client: C,
    server: S,
    /// Client to server.
    up: Direction,
    /// Server to client.
    down: Direction,
}

impl<C, S> Relay<C, S> {
    fn new(client: C, server: S) -> Self {
        Self {
            client,
            server,
            up: Direction::default(),
            down: Direction::default(),
        }
    }
}

impl<C, S> Future for Relay<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let up = this.up.poll_copy(cx, &mut this.client, &mut this.server)?;
        let down = this
            .down
            .poll_copy(cx, &mut this.server, &mut this.client)?;
        if up.is_ready() && down.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// One direction of a relay: reads into its buffer, writes it out, passes the end of the
/// stream on as a shutdown.
struct Direction {
    /// Empty while idle at the initial size; else `size` bytes.
    buffer: Vec<u8>,
    /// How much a read asks for: grows while reads fill it.
    size: usize,
    /// `buffer[start..end]` is read and not yet written.
    start: usize,
    end: usize,
    /// The reader reached its end.
    eof: bool,
    /// The writer was shut down: this direction is over.
    done: bool,
    /// Something was written since the last flush.
    unflushed: bool,
    /// Bytes read.
    read: u64,
    /// Bytes written.
    written: u64,
}

impl Default for Direction {
    fn default() -> Self {
        Self {
            buffer: Vec::new(),
            size: INITIAL_BUFFER,
            start: 0,
            end: 0,
            eof: false,
            done: false,
            unflushed: false,
            read: 0,
            written: 0,
        }
    }
}

impl Direction {
    /// Moves bytes from `reader` to `writer` until the reader ends (then shuts the writer
    /// down and is ready) or neither side can make progress now.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.start == self.end && !self.eof {
                if self.buffer.is_empty() {
                    self.buffer = vec![0; self.size];
                }
                let mut buf = ReadBuf::new(&mut self.buffer);
                match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => {
                        // Idle: a small buffer goes back (a large one stays, for the bulk
                        // transfer that pauses between reads, where reallocating it would
                        // map and unmap pages each time).
                        if self.size == INITIAL_BUFFER {
                            self.buffer = Vec::new();
                        }
                        // Nothing more to send for now: push out what was written.
                        if self.unflushed {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
                let n = buf.filled().len();
                self.read += n as u64;
                (self.start, self.end, self.eof) = (0, n, n == 0);
            }
            while self.start < self.end {
                let n = ready!(
                    Pin::new(&mut *writer).poll_write(cx, &self.buffer[self.start..self.end])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.written += n as u64;
                self.unflushed = true;
            }
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            // The read filled the whole buffer: more is likely waiting, read larger chunks.
            if self.end == self.size && self.size < MAX_BUFFER {
                self.size = (self.size * 2).min(MAX_BUFFER);
                self.buffer = vec![0; self.size];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[tokio::test]
    async fn copy_buffers_grow_for_bulk_and_stay_small_for_small_messages() {
        let (mut client_app, client_proxy) = tokio::io::duplex(2 * MAX_BUFFER);
        let (server_proxy, mut server_app) = tokio::io::duplex(2 * MAX_BUFFER);
        let mut relay = Relay::new(client_proxy, server_proxy);
        let bulk: Vec<u8> = (0..4 * MAX_BUFFER).map(|i| (i % 251) as u8).collect();
        let send = async {
            client_app.write_all(&bulk).await.unwrap();
            client_app.shutdown().await.unwrap();
        };
        let serve = async {
            let mut got = Vec::new();
            server_app.read_to_end(&mut got).await.unwrap();
            server_app.write_all(b"ok").await.unwrap();
            server_app.shutdown().await.unwrap();
            got
        };
        let (relayed, (), got) = tokio::join!(&mut relay, send, serve);
        relayed.unwrap();
        assert!(got == bulk, "the bulk arrived intact");
        let mut reply = Vec::new();
        client_app.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"ok");
        assert_eq!(relay.up.size, MAX_BUFFER);
        assert_eq!(relay.down.size, INITIAL_BUFFER);
        assert_eq!(relay.up.read, bulk.len() as u64);
        assert_eq!(relay.up.written, bulk.len() as u64);
        assert_eq!((relay.down.read, relay.down.written), (2, 2));
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_copy_buffer() {
        let (mut client_app, client_proxy) = tokio::io::duplex(64);
        let (server_proxy, mut server_app) = tokio::io::duplex(64);
        let mut relay = Relay::new(client_proxy, server_proxy);
        let exchange = async {
            client_app.write_all(b"ping").await.unwrap();
            let mut got = [0; 4];
            server_app.read_exact(&mut got).await.unwrap();
            server_app.write_all(b"pong").await.unwrap();
            client_app.read_exact(&mut got).await.unwrap();
            got
        };
        tokio::select! {
            got = exchange => assert_eq!(&got, b"pong"),
            relayed = &mut relay => panic!("the relay ended: {relayed:?}"),
        }
        // Nothing more to read either way: once polled again, neither direction holds memory.
        assert!(futures_poll_once(&mut relay).await.is_pending());
        assert_eq!(
            (relay.up.buffer.capacity(), relay.down.buffer.capacity()),
            (0, 0)
        );
        assert_eq!((relay.up.read, relay.down.read), (4, 4));
        // And the next message is relayed as the first was.
        client_app.write_all(b"again").await.unwrap();
        let mut got = [0; 5];
        tokio::select! {
            read = server_app.read_exact(&mut got) => { read.unwrap(); }
            relayed = &mut relay => panic!("the relay ended: {relayed:?}"),
        }
        assert_eq!(&got, b"again");
    }

    /// Polls `future` once.
    async fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
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
