//! Connection-pool limits (Istio's `connectionPool`, Envoy's circuit breakers), per upstream
//! service (and subset, as each subset is its own cluster in Envoy).
//!
//! The transport multiplexes requests over pooled HBONE streams, so "connections" are modelled
//! as request slots: a request holds one slot from admission until its response ends. With
//! every slot taken, a request waits as pending (bounded by `max_pending_requests`); beyond
//! `max_requests` in flight, or with the pending queue full, it is refused at once (503 with
//! response flag UO). `max_requests_per_connection` and the connect timeout are handed to the
//! transport in [`super::UpstreamHints`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use api::waypoint as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::compile::{ConfigError, duration};

/// A compiled [`pb::ConnectionPool`]; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PoolSpec {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_requests_per_connection: u32,
    pub max_retries: u32,
    pub connect_timeout: Option<Duration>,
}

/// Largest slot count a semaphore is given: far above any real pool, and below tokio's limit.
const MAX_SLOTS: u32 = 1 << 24;

impl PoolSpec {
    /// Compiles connection-pool settings.
    pub(crate) fn compile(p: &pb::ConnectionPool, field: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            max_connections: p.max_connections,
            max_pending: p.max_pending_requests,
            max_requests: p.max_requests,
            max_requests_per_connection: p.max_requests_per_connection,
            max_retries: p.max_retries,
            connect_timeout: duration(
                p.connect_timeout.as_ref(),
                &format!("{field}.connect_timeout"),
            )?
            .filter(|d| !d.is_zero()),
        })
    }
}

/// The counters of one pool.
#[derive(Debug)]
pub(crate) struct PoolState {
    spec: PoolSpec,
    /// Request slots ("connections"); `None` when unlimited.
    slots: Option<Arc<Semaphore>>,
    active: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("upstream overflow")]
pub(crate) struct Overflow;

/// An admitted request; releases its slot when dropped (at the end of the response).
#[derive(Debug)]
pub(crate) struct Admission {
    pool: Arc<PoolState>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.pool.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight, counted against `max_retries` until dropped.
#[derive(Debug)]
pub(crate) struct RetryToken {
    pool: Arc<PoolState>,
}

impl Drop for RetryToken {
    fn drop(&mut self) {
        self.pool.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the pending count however the wait ends (admitted, timed out, cancelled).
struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolState {
    /// Fresh counters for `spec`.
    pub(crate) fn new(spec: PoolSpec) -> Arc<Self> {
        Arc::new(Self {
            spec,
            slots: (spec.max_connections > 0)
                .then(|| Arc::new(Semaphore::new(spec.max_connections.min(MAX_SLOTS) as usize))),
            active: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
        })
    }

    /// The limits it enforces.
    pub(crate) fn spec(&self) -> PoolSpec {
        self.spec
    }

    /// Requests in flight.
    #[cfg(test)]
    pub(crate) fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Admits a request: at once when a slot is free, after waiting when the pending queue has
    /// room, else refuses it.
    pub(crate) async fn admit(self: &Arc<Self>) -> Result<Admission, Overflow> {
        let active = self.active.fetch_add(1, Ordering::Relaxed);
        // Counted before any wait so that the request limit covers pending requests too.
        let admission = |slot| Admission {
            pool: self.clone(),
            _slot: slot,
        };
        if self.spec.max_requests > 0 && active >= self.spec.max_requests {
            drop(admission(None));
            return Err(Overflow);
        }
        let Some(slots) = &self.slots else {
            return Ok(admission(None));
        };
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Ok(admission(Some(slot)));
        }
        let pending = self.pending.fetch_add(1, Ordering::Relaxed);
        let _pending = PendingGuard(&self.pending);
        if self.spec.max_pending > 0 && pending >= self.spec.max_pending {
            drop(admission(None));
            return Err(Overflow);
        }
        let guard = admission(None);
        match slots.clone().acquire_owned().await {
            Ok(slot) => {
                // Move the slot into the admission the guard already counts.
                let mut guard = guard;
                guard._slot = Some(slot);
                Ok(guard)
            }
            Err(_) => Err(Overflow),
        }
    }

    /// Takes a retry slot when fewer than `max_retries` retries are in flight.
    pub(crate) fn try_retry(self: &Arc<Self>) -> Option<RetryToken> {
        let before = self.retries.fetch_add(1, Ordering::Relaxed);
        let token = RetryToken { pool: self.clone() };
        if self.spec.max_retries > 0 && before >= self.spec.max_retries {
            drop(token);
            return None;
        }
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_pending_and_overflow() {
        let pool = PoolState::new(PoolSpec {
            max_connections: 1,
            max_pending: 1,
            ..Default::default()
        });
        let first = pool.admit().await.unwrap();
        let p2 = pool.clone();
        let waiting = tokio::spawn(async move { p2.admit().await.map(|_| ()) });
        // Wait until the second request is queued.
        while pool.pending.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.admit().await.unwrap_err(), Overflow);
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(pool.active(), 0);
        assert_eq!(pool.pending.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn max_requests_and_retries() {
        let pool = PoolState::new(PoolSpec {
            max_requests: 2,
            max_retries: 1,
            ..Default::default()
        });
        let a = pool.admit().await.unwrap();
        let _b = pool.admit().await.unwrap();
        assert!(pool.admit().await.is_err());
        drop(a);
        assert!(pool.admit().await.is_ok());
        let r = pool.try_retry().unwrap();
        assert!(pool.try_retry().is_none());
        drop(r);
        assert!(pool.try_retry().is_some());
    }
}
