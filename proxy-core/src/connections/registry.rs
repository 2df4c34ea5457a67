//! Live connections of one pod: a registry that counts them, closes them on drain, and
//! re-checks inbound ones against policy whenever the mesh config changes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hbone::Identity;
use tokio::sync::Notify;
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
    close: Arc<CloseSignal>,
}

/// How a registry tells one connection to close: the first reason given, and a wake-up for
/// the connection's task. (A node holds one per connection: a watch channel, with its eight
/// wait lists, was four times the size.)
#[derive(Default)]
struct CloseSignal {
    reason: OnceLock<CloseReason>,
    notify: Notify,
}

impl CloseSignal {
    /// Closes for `reason` unless already closed (the first reason stays).
    fn close(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            self.notify.notify_waiters();
        }
    }

    fn is_closed(&self) -> bool {
        self.reason.get().is_some()
    }

    /// Resolves with the reason once closed.
    async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before checking, so a close in between is not missed.
            notified.as_mut().enable();
            if let Some(reason) = self.reason.get() {
                return reason.clone();
            }
            notified.await;
        }
    }
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
        let close = Arc::new(CloseSignal::default());
        lock(&self.entries).insert(
            id,
            Entry {
                authz,
                close: close.clone(),
            },
        );
        Tracked {
            id,
            registry: self.clone(),
            close,
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
            entry.close.close(reason.clone());
        }
    }

    /// Re-evaluates every inbound connection against `state` and closes those now denied.
    /// Returns how many were closed.
    pub fn recheck(&self, state: &ProxyState) -> usize {
        // Evaluate outside the lock: authorization takes the state's own locks.
        let inbound: Vec<(AuthzInputs, Arc<CloseSignal>)> = lock(&self.entries)
            .values()
            .filter_map(|e| Some((e.authz.clone()?, e.close.clone())))
            .collect();
        let mut closed = 0;
        for (inputs, close) in inbound {
            if close.is_closed() {
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
                close.close(CloseReason::Policy(policy));
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
    close: Arc<CloseSignal>,
}

impl Tracked {
    /// Resolves when the connection must be cut, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.close.closed().await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_hears_the_first_reason_and_later_ones_change_nothing() {
        let registry = LiveConnections::new();
        let tracked = registry.register(None);
        let policy = CloseReason::Policy("shop/deny-all".into());
        let close = async {
            tokio::task::yield_now().await;
            registry.close_all(policy.clone());
            registry.close_all(CloseReason::Drain);
        };
        let waiters = async { tokio::join!(tracked.closed(), tracked.closed(), close) };
        let (first, second, ()) = tokio::time::timeout(std::time::Duration::from_secs(10), waiters)
            .await
            .expect("both waiters woken");
        assert_eq!((&first, &second), (&policy, &policy));
        // Asked after the close, it answers at once.
        assert_eq!(tracked.closed().await, policy);
        assert_eq!(registry.len(), 1);
        drop(tracked);
        assert!(registry.is_empty());
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
