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

/// `kind` of a waypoint's HTTP request.
pub const REQUEST: &str = "request";
/// `kind` of a connection a ztunnel handles.
pub const CONNECTION: &str = "connection";

/// One request or connection, as a tap shows it. A request's line carries the request
/// fields, a connection's the connection fields (see [`TapEvent::kind`]), so neither carries
/// the other's empty values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TapEvent {
    /// [`REQUEST`] (a waypoint's HTTP request) or [`CONNECTION`] (a ztunnel's connection).
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
    /// Connections: `open` or `close`.
    pub phase: &'static str,
    /// Connections: `inbound` (reported by the destination's ztunnel) or `outbound` (by the
    /// source's).
    pub direction: &'static str,
    /// Connections: the destination's SPIFFE identity (verified, or expected of the peer).
    pub destination_identity: String,
    /// Connections: the client's address.
    pub source_address: String,
    /// Connections: the original destination address.
    pub destination_address: String,
    /// Connections: carried over mutual TLS (HBONE).
    pub mtls: bool,
    /// Connections: `allow` or `deny`, where the ztunnel decided (inbound); empty otherwise.
    pub verdict: &'static str,
    /// Connections: the policy that denied it.
    pub policy: String,
    /// Connections, on close: bytes the source sent.
    pub bytes_sent: u64,
    /// Connections, on close: bytes the source received.
    pub bytes_received: u64,
    /// Connections, on close: how long it lasted, milliseconds.
    pub duration_ms: f64,
}

/// `phase` of a connection's first event.
pub const OPEN: &str = "open";
/// `phase` of a connection's last event.
pub const CLOSE: &str = "close";

impl Serialize for TapEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.kind == CONNECTION {
            ConnectionLine::from(self).serialize(serializer)
        } else {
            RequestLine::from(self).serialize(serializer)
        }
    }
}

/// A request's line: its fields, in this order.
#[derive(Serialize)]
struct RequestLine<'a> {
    kind: &'a str,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    status: u16,
    latency_ms: f64,
    route: &'a str,
    source_identity: &'a str,
    source_workload: &'a str,
    source_namespace: &'a str,
    destination_service: &'a str,
    destination_workload: &'a str,
    destination_namespace: &'a str,
    upstream: &'a str,
    response_flags: &'a str,
}

impl<'a> From<&'a TapEvent> for RequestLine<'a> {
    fn from(e: &'a TapEvent) -> Self {
        Self {
            kind: e.kind,
            method: &e.method,
            authority: &e.authority,
            path: &e.path,
            status: e.status,
            latency_ms: e.latency_ms,
            route: &e.route,
            source_identity: &e.source_identity,
            source_workload: &e.source_workload,
            source_namespace: &e.source_namespace,
            destination_service: &e.destination_service,
            destination_workload: &e.destination_workload,
            destination_namespace: &e.destination_namespace,
            upstream: &e.upstream,
            response_flags: &e.response_flags,
        }
    }
}

/// A connection's line: what is unknown is left out, byte counts only on close.
#[derive(Serialize)]
struct ConnectionLine<'a> {
    kind: &'a str,
    phase: &'a str,
    direction: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_identity: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_workload: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_namespace: &'a str,
    source_address: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    destination_identity: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    destination_service: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    destination_workload: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    destination_namespace: &'a str,
    destination_address: &'a str,
    mtls: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    verdict: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    policy: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_received: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    response_flags: &'a str,
}

impl<'a> From<&'a TapEvent> for ConnectionLine<'a> {
    fn from(e: &'a TapEvent) -> Self {
        let closed = e.phase == CLOSE;
        Self {
            kind: e.kind,
            phase: e.phase,
            direction: e.direction,
            source_identity: &e.source_identity,
            source_workload: &e.source_workload,
            source_namespace: &e.source_namespace,
            source_address: &e.source_address,
            destination_identity: &e.destination_identity,
            destination_service: &e.destination_service,
            destination_workload: &e.destination_workload,
            destination_namespace: &e.destination_namespace,
            destination_address: &e.destination_address,
            mtls: e.mtls,
            verdict: e.verdict,
            policy: &e.policy,
            bytes_sent: closed.then_some(e.bytes_sent),
            bytes_received: closed.then_some(e.bytes_received),
            duration_ms: closed.then_some(e.duration_ms),
            response_flags: if closed { &e.response_flags } else { "" },
        }
    }
}

/// Which side of an event a filter's `workload` and `namespace` name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Side {
    /// The destination (what a request or connection goes to).
    #[default]
    Destination,
    /// The source (the caller).
    Source,
    /// Either: a workload's inbound and outbound alike.
    Either,
}

/// What a listener wants to see; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapFilter {
    /// Only this kind ([`REQUEST`] or [`CONNECTION`]).
    pub kind: Option<String>,
    /// Only this method (connections have none, so they never match one).
    pub method: Option<String>,
    /// Only paths starting with this (connections have none: an empty path).
    pub path_prefix: Option<String>,
    /// Only this workload, on [`TapFilter::side`].
    pub workload: Option<String>,
    /// Only this destination service (name).
    pub service: Option<String>,
    /// Only this namespace, on [`TapFilter::side`].
    pub namespace: Option<String>,
    /// Which side `workload` and `namespace` are matched on.
    pub side: Side,
}

impl TapFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &TapEvent) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        let side = |workload: &str, namespace: &str| {
            is(&self.workload, workload) && is(&self.namespace, namespace)
        };
        let destination = || side(&event.destination_workload, &event.destination_namespace);
        let source = || side(&event.source_workload, &event.source_namespace);
        is(&self.kind, event.kind)
            && is(&self.method, &event.method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| event.path.starts_with(p))
            && is(&self.service, &event.destination_service)
            && match self.side {
                Side::Destination => destination(),
                Side::Source => source(),
                Side::Either => destination() || source(),
            }
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

    fn connection(source: &str, destination: &str) -> TapEvent {
        TapEvent {
            kind: CONNECTION,
            phase: OPEN,
            direction: "outbound",
            source_workload: source.into(),
            source_namespace: "shop".into(),
            destination_workload: destination.into(),
            destination_namespace: "shop".into(),
            destination_service: destination.into(),
            ..TapEvent::default()
        }
    }

    #[test]
    fn filters_select_connections_by_either_side_kind_and_service() {
        let by = |workload: &str, side| TapFilter {
            workload: Some(workload.into()),
            namespace: Some("shop".into()),
            side,
            ..TapFilter::default()
        };
        let out = connection("orders", "payments");
        let into = connection("client", "orders");
        assert!(!by("orders", Side::Destination).matches(&out));
        assert!(by("orders", Side::Destination).matches(&into));
        assert!(by("orders", Side::Source).matches(&out));
        assert!(!by("orders", Side::Source).matches(&into));
        assert!(by("orders", Side::Either).matches(&out));
        assert!(by("orders", Side::Either).matches(&into));
        assert!(!by("carts", Side::Either).matches(&out));
        let elsewhere = TapFilter {
            namespace: Some("other".into()),
            ..by("orders", Side::Either)
        };
        assert!(
            !elsewhere.matches(&out),
            "workload and namespace on the same side"
        );

        let kind = |kind: &str| TapFilter {
            kind: Some(kind.into()),
            ..TapFilter::default()
        };
        assert!(kind(CONNECTION).matches(&out));
        assert!(!kind(REQUEST).matches(&out));
        assert!(kind(REQUEST).matches(&event("GET", "/", "orders")));
        let service = |name: &str| TapFilter {
            service: Some(name.into()),
            ..TapFilter::default()
        };
        assert!(service("payments").matches(&out));
        assert!(!service("orders").matches(&out));
        let method = TapFilter {
            method: Some("GET".into()),
            ..TapFilter::default()
        };
        assert!(!method.matches(&out), "a connection has no method");
    }

    #[test]
    fn request_and_connection_lines_carry_only_their_own_fields() {
        let request = serde_json::to_value(event("GET", "/a", "orders")).unwrap();
        let keys: Vec<&str> = request
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 15, "{keys:?}");
        assert!(request.get("phase").is_none() && request.get("mtls").is_none());

        let mut open = connection("client", "orders");
        open.source_address = "10.0.0.1:5000".into();
        open.destination_address = "10.0.0.2:8080".into();
        open.mtls = true;
        let line = serde_json::to_value(&open).unwrap();
        assert_eq!(line["phase"], "open");
        assert_eq!(line["mtls"], true);
        assert!(line.get("method").is_none() && line.get("status").is_none());
        assert!(
            line.get("bytes_sent").is_none(),
            "no counts when opened: {line}"
        );
        let closed = TapEvent {
            phase: CLOSE,
            bytes_sent: 12,
            bytes_received: 34,
            response_flags: "-".into(),
            ..open
        };
        let line = serde_json::to_value(&closed).unwrap();
        assert_eq!(line["bytes_sent"], 12);
        assert_eq!(line["bytes_received"], 34);
        assert_eq!(line["response_flags"], "-");
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
