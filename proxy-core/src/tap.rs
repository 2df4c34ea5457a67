//! Live events for `meshctl tap`: what a proxy handles, as it handles it, to whoever listens on
//! its admin endpoint's `/tap`.
//!
//! Nobody tapping costs one relaxed atomic load per event. Each listener has a bounded queue
//! of ready JSON lines: when a listener reads slower than traffic flows, events are dropped for
//! it (counted, and told to it in the stream) rather than slowing traffic or growing memory.
//! Events carry no bodies and no header values.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// Events queued per listener before they are dropped for it.
pub const QUEUE: usize = 1024;
/// Listeners at once per proxy; more are refused.
pub const MAX_LISTENERS: usize = 8;

/// One request or connection, as a tap shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TapEvent {
    /// `request` (a waypoint's HTTP request) or `connection`.
    pub kind: &'static str,
    /// HTTP method.
    pub method: String,
    /// Authority as received.
    pub authority: String,
    /// Path (and query) as received.
    pub path: String,
    /// Response status; 0 when the client went away first.
    pub status: u16,
    /// From arrival to the end of the response, milliseconds.
    pub latency_ms: f64,
    /// The route that matched.
    pub route: String,
    /// The caller's SPIFFE identity, as verified by mutual TLS.
    pub source_identity: String,
    /// The caller's workload and namespace.
    pub source_workload: String,
    /// The caller's namespace.
    pub source_namespace: String,
    /// The destination service's name.
    pub destination_service: String,
    /// The destination workload.
    pub destination_workload: String,
    /// The destination workload's namespace.
    pub destination_namespace: String,
    /// The endpoint of the last attempt.
    pub upstream: String,
    /// Envoy response flags, `-` when none.
    pub response_flags: String,
}

/// What a listener wants to see; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapFilter {
    /// Only this method.
    pub method: Option<String>,
    /// Only paths starting with this.
    pub path_prefix: Option<String>,
    /// Only this destination workload.
    pub workload: Option<String>,
    /// Only this destination service (name).
    pub service: Option<String>,
    /// Only destinations in this namespace.
    pub namespace: Option<String>,
}

impl TapFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &TapEvent) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.method, &event.method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| event.path.starts_with(p))
            && is(&self.workload, &event.destination_workload)
            && is(&self.service, &event.destination_service)
            && is(&self.namespace, &event.destination_namespace)
    }
}

/// A listener's side of the hub.
struct Listener {
    filter: TapFilter,
    lines: mpsc::Sender<Bytes>,
    /// Dropped since the listener last heard of it.
    dropped: AtomicU64,
}

/// The proxy's tap: listeners come and go; the proxy publishes every event.
#[derive(Default)]
pub struct Tap {
    listeners: Mutex<Vec<Arc<Listener>>>,
    /// How many listeners there are, read without the lock on every event.
    active: AtomicUsize,
    /// Events dropped for slow listeners, ever.
    dropped_total: AtomicU64,
}

/// Why a listener was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{MAX_LISTENERS} taps are already listening to this proxy")]
pub struct TooManyListeners;

impl Tap {
    /// Whether anyone listens: the only cost of the tap when nobody does.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Publishes the event `make` builds, if anyone listens.
    pub fn publish(&self, make: impl FnOnce() -> TapEvent) {
        if !self.is_active() {
            return;
        }
        let event = make();
        let mut line: Option<Bytes> = None;
        let mut closed = false;
        for listener in self.lock().iter() {
            if !listener.filter.matches(&event) {
                continue;
            }
            let line = line
                .get_or_insert_with(|| {
                    let mut text = serde_json::to_vec(&event).unwrap_or_default();
                    text.push(b'\n');
                    Bytes::from(text)
                })
                .clone();
            match listener.lines.try_send(line) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    listener.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped_total.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed = true,
            }
        }
        if closed {
            self.forget_closed();
        }
    }

    /// Adds a listener; its events arrive on the returned stream until it is dropped.
    pub fn listen(self: &Arc<Self>, filter: TapFilter) -> Result<TapStream, TooManyListeners> {
        let mut listeners = self.lock();
        if listeners.len() >= MAX_LISTENERS {
            return Err(TooManyListeners);
        }
        let (lines, receiver) = mpsc::channel(QUEUE);
        let listener = Arc::new(Listener {
            filter,
            lines,
            dropped: AtomicU64::new(0),
        });
        listeners.push(listener.clone());
        self.active.store(listeners.len(), Ordering::Relaxed);
        Ok(TapStream {
            tap: self.clone(),
            listener,
            receiver,
        })
    }

    /// Events dropped for slow listeners since the proxy started.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    fn forget_closed(&self) {
        let mut listeners = self.lock();
        listeners.retain(|l| !l.lines.is_closed());
        self.active.store(listeners.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Listener>>> {
        // Every change under the lock is one push or retain: a panic leaves a usable list.
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One listener's events, as JSON lines; leaving drops the listener.
pub struct TapStream {
    tap: Arc<Tap>,
    listener: Arc<Listener>,
    receiver: mpsc::Receiver<Bytes>,
}

impl TapStream {
    /// The next line: `{"dropped":N}` first when events were dropped since the last one, then
    /// the event. `None` once the tap is gone.
    pub fn poll_line(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Bytes>> {
        let dropped = self.listener.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            return std::task::Poll::Ready(Some(Bytes::from(format!(
                "{{\"dropped\":{dropped}}}\n"
            ))));
        }
        self.receiver.poll_recv(cx)
    }
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.receiver.close();
        self.tap.forget_closed();
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn event(method: &str, path: &str, workload: &str) -> TapEvent {
        TapEvent {
            kind: "request",
            method: method.into(),
            path: path.into(),
            destination_workload: workload.into(),
            destination_namespace: "shop".into(),
            status: 200,
            ..TapEvent::default()
        }
    }

    #[tokio::test]
    async fn listeners_get_what_their_filter_passes_and_nothing_is_built_without_them() {
        let tap = Arc::new(Tap::default());
        tap.publish(|| unreachable!("nobody listens"));
        let mut orders = tap
            .listen(TapFilter {
                workload: Some("orders".into()),
                path_prefix: Some("/api".into()),
                ..TapFilter::default()
            })
            .unwrap();
        assert!(tap.is_active());
        tap.publish(|| event("GET", "/api/x", "orders"));
        tap.publish(|| event("GET", "/other", "orders"));
        tap.publish(|| event("GET", "/api/y", "payments"));
        let line = poll_fn(|cx| orders.poll_line(cx)).await.unwrap();
        let seen: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(seen["path"], "/api/x");
        assert!(orders.receiver.try_recv().is_err(), "only one event passed");
        drop(orders);
        assert!(!tap.is_active());
        tap.publish(|| unreachable!("the listener left"));
    }

    #[tokio::test]
    async fn a_slow_listener_loses_events_counted_and_told_never_more_than_its_queue() {
        let tap = Arc::new(Tap::default());
        let mut slow = tap.listen(TapFilter::default()).unwrap();
        for _ in 0..QUEUE + 10 {
            tap.publish(|| event("GET", "/", "orders"));
        }
        assert_eq!(tap.dropped_total(), 10);
        let first = poll_fn(|cx| slow.poll_line(cx)).await.unwrap();
        assert_eq!(&first[..], b"{\"dropped\":10}\n");
        let mut events = 0;
        while slow.receiver.try_recv().is_ok() {
            events += 1;
        }
        assert_eq!(events, QUEUE);
    }

    #[test]
    fn listeners_are_capped() {
        let tap = Arc::new(Tap::default());
        let held: Vec<TapStream> = (0..MAX_LISTENERS)
            .map(|_| tap.listen(TapFilter::default()).unwrap())
            .collect();
        assert!(matches!(
            tap.listen(TapFilter::default()),
            Err(TooManyListeners)
        ));
        drop(held);
        assert!(tap.listen(TapFilter::default()).is_ok());
    }
}
