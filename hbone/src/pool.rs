//! The HBONE connection pool: many tunnels multiplexed over few mTLS connections.
//!
//! Connections are keyed by (source identity, destination identities, destination address,
//! source IP): two tunnels may share a connection only if nothing that the peer authenticates
//! or sees differs between them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tracing::{debug, warn};

use crate::cert::WorkloadCertificate;
use crate::client::{ConnectRequest, SocketFactory, Upstream, dial, open_stream};
use crate::error::Error;
use crate::identity::Identity;
use crate::settings;
use crate::stream::TunnelStream;

/// Tunables of the pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Streams per connection at most (further bounded by the peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: usize,
    /// A connection with no stream for this long is closed.
    pub idle_timeout: Duration,
    /// A connection with no stream for this long is closed if another connection to the
    /// same peer remains: after a burst the pool shrinks back to one warm connection soon,
    /// not after the full `idle_timeout`.
    pub surplus_idle_timeout: Duration,
    /// How often each connection is probed with a PING.
    pub keepalive_interval: Duration,
    /// A PING unanswered for this long marks the connection broken.
    pub keepalive_timeout: Duration,
    /// Attempts to open a stream when connections turn out to be going away.
    pub max_attempts: usize,
    /// Creates the TCP socket of each dialed connection; `None` uses a plain socket.
    pub socket_factory: Option<SocketFactory>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_streams_per_connection: settings::MAX_STREAMS_PER_CONNECTION as usize,
            idle_timeout: Duration::from_secs(60),
            surplus_idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_attempts: 3,
            socket_factory: None,
        }
    }
}

/// A shared pool of HBONE connections. Cloning is cheap and shares the pool.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: PoolSettings,
    entries: Mutex<HashMap<PoolKey, Arc<Entry>>>,
    next_id: AtomicU64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PoolKey {
    source: Identity,
    destinations: Vec<Identity>,
    address: SocketAddr,
    source_ip: Option<IpAddr>,
}

impl PoolKey {
    fn new(source: &Identity, upstream: &Upstream) -> Self {
        let mut destinations = upstream.identities.clone();
        destinations.sort();
        destinations.dedup();
        Self {
            source: source.clone(),
            destinations,
            address: upstream.address,
            source_ip: upstream.source_ip,
        }
    }
}

/// The connections of one key, and the single-flight dial state.
#[derive(Debug, Default)]
struct Entry {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while dialing, so that callers arriving together dial once.
    dial: tokio::sync::Mutex<DialState>,
    /// Dials started so far; read without the lock to notice a dial that finished meanwhile.
    dials: AtomicU64,
}

#[derive(Debug, Default)]
struct DialState {
    /// The last dial's failure, shared with the callers that waited for it.
    last_failure: Option<(u64, String)>,
}

/// Marks a connection that takes no new streams; the low bits count active streams.
const CLOSED: usize = 1 << (usize::BITS - 1);

#[derive(Debug)]
struct Conn {
    id: u64,
    sender: SendRequest<Bytes>,
    state: AtomicUsize,
    idle_since: Mutex<Instant>,
}

/// A reserved stream slot on a connection; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let before = self.conn.state.fetch_sub(1, Ordering::AcqRel);
        if before & !CLOSED == 1 {
            *lock(&self.conn.idle_since) = Instant::now();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the pool: the data stays consistent under each lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Conn {
    fn limit(&self, configured: usize) -> usize {
        configured
            .min(self.sender.current_max_send_streams())
            .max(1)
    }

    fn try_reserve(self: &Arc<Self>, configured: usize) -> Option<Slot> {
        let limit = self.limit(configured);
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current & CLOSED != 0 || current >= limit {
                return None;
            }
            match self.state.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Slot { conn: self.clone() }),
                Err(actual) => current = actual,
            }
        }
    }

    /// Closes the connection to new streams only if none is active, atomically with respect
    /// to reservations.
    fn close_if_idle(&self) -> bool {
        self.state
            .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn mark_closed(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.state.load(Ordering::Acquire) & !CLOSED == 0)
            .then(|| lock(&self.idle_since).elapsed())
    }
}

impl Entry {
    fn reserve_existing(&self, configured: usize) -> Option<Slot> {
        lock(&self.conns)
            .iter()
            .find_map(|conn| conn.try_reserve(configured))
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(PoolSettings::default())
    }
}

impl Pool {
    /// An empty pool.
    pub fn new(config: PoolSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                entries: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Opens a tunnel to `request.target` through `upstream`, as the workload owning `cert`.
    ///
    /// Reuses a pooled connection with a free stream slot, or dials one (once, however many
    /// callers arrive together). A connection that turns out to be going away (GOAWAY) is
    /// retired and the stream retried on another: the peer never saw that stream, so nothing
    /// is sent twice.
    pub async fn connect(
        &self,
        cert: &Arc<WorkloadCertificate>,
        upstream: &Upstream,
        request: &ConnectRequest,
    ) -> Result<TunnelStream, Error> {
        let key = PoolKey::new(cert.identity(), upstream);
        let mut last_error = String::from("no attempt made");
        for _ in 0..self.inner.config.max_attempts.max(1) {
            let slot = self.acquire(&key, cert, upstream).await?;
            match open_stream(slot.conn.sender.clone(), request).await {
                Ok((send, recv)) => return Ok(TunnelStream::new(send, recv, Some(Box::new(slot)))),
                Err(Error::H2(e)) if e.is_go_away() || e.is_io() || refused(&e) => {
                    debug!(conn = slot.conn.id, error = %e, "retiring HBONE connection");
                    slot.conn.mark_closed();
                    last_error = e.to_string();
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(upstream.address, last_error))
    }

    /// Live connections across all keys (closing ones included until they finish).
    pub fn connection_count(&self) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.entries).values().cloned().collect();
        entries.iter().map(|e| lock(&e.conns).len()).sum()
    }

    async fn acquire(
        &self,
        key: &PoolKey,
        cert: &Arc<WorkloadCertificate>,
        upstream: &Upstream,
    ) -> Result<Slot, Error> {
        let max = self.inner.config.max_streams_per_connection;
        let entry = self.entry(key);
        if let Some(slot) = entry.reserve_existing(max) {
            return Ok(slot);
        }
        let dials_seen = entry.dials.load(Ordering::Acquire);
        let mut dial_state = entry.dial.lock().await;
        // Someone may have dialed while we waited for the lock.
        if let Some(slot) = entry.reserve_existing(max) {
            return Ok(slot);
        }
        if let Some((attempt, error)) = &dial_state.last_failure
            && *attempt > dials_seen
        {
            // The dial we waited on failed: share its verdict instead of hammering the peer.
            return Err(Error::Unavailable(upstream.address, error.clone()));
        }
        let attempt = entry.dials.fetch_add(1, Ordering::AcqRel) + 1;
        let (sender, mut connection) =
            match dial(upstream, cert, self.inner.config.socket_factory.as_ref()).await {
                Ok(dialed) => dialed,
                Err(e) => {
                    dial_state.last_failure = Some((attempt, e.to_string()));
                    return Err(e);
                }
            };
        dial_state.last_failure = None;
        let conn = Arc::new(Conn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            state: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        });
        let slot = conn.try_reserve(max).ok_or(Error::Unavailable(
            upstream.address,
            "new connection has no stream capacity".into(),
        ))?;
        lock(&entry.conns).push(conn.clone());
        let ping_pong = connection.ping_pong();
        let driver = Driver {
            pool: self.inner.clone(),
            key: key.clone(),
            entry: entry.clone(),
            conn,
        };
        tokio::spawn(driver.run(connection, ping_pong));
        Ok(slot)
    }

    fn entry(&self, key: &PoolKey) -> Arc<Entry> {
        let mut entries = lock(&self.inner.entries);
        // Looked up first: the key is cloned (a few strings) only for a new entry, not on
        // every tunnel.
        if let Some(entry) = entries.get(key) {
            return entry.clone();
        }
        entries.entry(key.clone()).or_default().clone()
    }
}

fn refused(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM)
}

/// Drives one pooled connection: polls it, probes it with PINGs, closes it when idle, and
/// removes it from the pool when it ends.
struct Driver {
    pool: Arc<Inner>,
    key: PoolKey,
    entry: Arc<Entry>,
    conn: Arc<Conn>,
}

impl Driver {
    async fn run<F>(self, connection: F, mut ping_pong: Option<h2::PingPong>)
    where
        F: std::future::Future<Output = Result<(), h2::Error>>,
    {
        let config = &self.pool.config;
        let mut connection = pin!(connection);
        let mut tick = tokio::time::interval(config.keepalive_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        'drive: loop {
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        debug!(conn = self.conn.id, error = %e, "HBONE connection ended");
                    }
                    break 'drive;
                }
                _ = tick.tick() => {
                    if self.close_if_idle_long_enough(config) {
                        debug!(conn = self.conn.id, "closing idle HBONE connection");
                        break 'drive;
                    }
                    let Some(pp) = ping_pong.as_mut() else { continue };
                    let ping = tokio::time::timeout(config.keepalive_timeout, pp.ping(h2::Ping::opaque()));
                    tokio::select! {
                        result = &mut connection => {
                            if let Err(e) = result {
                                debug!(conn = self.conn.id, error = %e, "HBONE connection ended");
                            }
                            break 'drive;
                        }
                        pong = ping => if !matches!(pong, Ok(Ok(_))) {
                            warn!(conn = self.conn.id, peer = %self.key.address, "HBONE keepalive failed; dropping connection");
                            break 'drive;
                        }
                    }
                }
            }
        }
        self.conn.mark_closed();
        self.retire();
    }

    /// Closes the connection to new streams if it has been idle for the idle timeout, or for
    /// the surplus timeout while another connection to the peer remains.
    fn close_if_idle_long_enough(&self, config: &PoolSettings) -> bool {
        let Some(idle) = self.conn.idle_for() else {
            return false;
        };
        if idle >= config.idle_timeout {
            return self.conn.close_if_idle();
        }
        if idle < config.surplus_idle_timeout {
            return false;
        }
        // Decided and removed under the entry's lock, so that of two idle siblings one stays.
        let mut conns = lock(&self.entry.conns);
        if conns.len() > 1 && self.conn.close_if_idle() {
            conns.retain(|c| c.id != self.conn.id);
            return true;
        }
        false
    }

    fn retire(&self) {
        let now_empty = {
            let mut conns = lock(&self.entry.conns);
            conns.retain(|c| c.id != self.conn.id);
            conns.is_empty()
        };
        if now_empty {
            let mut entries = lock(&self.pool.entries);
            if entries
                .get(&self.key)
                .is_some_and(|e| Arc::ptr_eq(e, &self.entry) && lock(&e.conns).is_empty())
            {
                entries.remove(&self.key);
            }
        }
    }
}
