//! The access log: one line per request, in the layout of the process's other log lines
//! (`<time>  INFO access: request complete key=value ...`), written to stdout by a dedicated
//! thread rather than by the request's task.
//!
//! A request formats its line into a per-thread buffer and appends it to a bounded queue of
//! bytes; the writer thread takes the whole queue at once, every [`FLUSH_INTERVAL`] or as soon
//! as [`BATCH_BYTES`] are waiting, and writes it with one call. A request never waits for
//! stdout: when the queue is full (stdout is slower than the traffic, or blocked) its line is
//! dropped and counted.
//!
//! The line goes out when the `access` target is enabled at INFO in the process's log filter,
//! so `--log-level info,access=off` still turns the access log off.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::record::RequestRecord;

/// Most bytes of lines waiting for the writer; past it lines are dropped.
const CAPACITY: usize = 1024 * 1024;
/// Waiting bytes that wake the writer before its interval is up.
const BATCH_BYTES: usize = 64 * 1024;
/// Longest a line waits for the lines after it before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A per-thread line buffer that grew past this (a very long path) is given back.
const LINE_BUFFER_KEEP: usize = 8 * 1024;

/// Where lines go.
pub(crate) type Sink = Box<dyn Write + Send>;

/// The access log of one waypoint: a queue and the thread writing it out.
pub(crate) struct AccessLog {
    shared: Arc<Handoff>,
    capacity: usize,
    /// The sink until the writer starts (on the first line), then its thread.
    sink: Mutex<Option<Sink>>,
    writer: OnceLock<Option<JoinHandle<()>>>,
}

/// What the threads logging lines and the writer thread share.
struct Handoff {
    queue: Mutex<Queue>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    /// The writer sleeps on `wake`.
    waiting: bool,
    /// No more lines: the writer writes what is left and ends.
    closed: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new(Box::new(std::io::stdout()), CAPACITY)
    }
}

impl AccessLog {
    /// A log writing to `sink`, keeping at most `capacity` bytes waiting.
    pub(crate) fn new(sink: Sink, capacity: usize) -> Self {
        Self {
            shared: Arc::new(Handoff {
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
                dropped: AtomicU64::new(0),
            }),
            capacity,
            sink: Mutex::new(Some(sink)),
            writer: OnceLock::new(),
        }
    }

    /// Logs `record`, if the log filter lets the `access` target through.
    pub(crate) fn log(&self, record: &RequestRecord) {
        if tracing::enabled!(target: "access", tracing::Level::INFO) {
            self.write(record, SystemTime::now());
        }
    }

    /// Queues the line of `record`, stamped `at`.
    pub(crate) fn write(&self, record: &RequestRecord, at: SystemTime) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        LINE.with(|line| {
            // A line being formatted on this thread (a re-entrant call) is left alone.
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.clear();
            format_line(&mut line, record, at);
            self.push(line.as_bytes());
            if line.capacity() > LINE_BUFFER_KEEP {
                *line = String::with_capacity(512);
            }
        });
    }

    /// Lines dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn push(&self, line: &[u8]) {
        if !self.started() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut queue = self.shared.lock();
        if queue.closed || queue.lines.len() + line.len() > self.capacity {
            drop(queue);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = queue.lines.is_empty();
        queue.lines.extend_from_slice(line);
        // The writer needs waking for a first line (to start its interval) and for a full
        // batch; lines in between just accumulate.
        if queue.waiting && (was_empty || queue.lines.len() >= BATCH_BYTES) {
            queue.waiting = false;
            self.shared.wake.notify_one();
        }
    }

    /// Starts the writer thread on first use; false when it could not be started.
    fn started(&self) -> bool {
        self.writer
            .get_or_init(|| {
                let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).take()?;
                let shared = self.shared.clone();
                std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || shared.run(sink))
                    .map_err(|e| tracing::warn!(error = %e, "access log writer did not start"))
                    .ok()
            })
            .is_some()
    }
}

impl Drop for AccessLog {
    /// Writes out what is queued before the log goes away (at shutdown).
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(Some(writer)) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is only ever appended to or swapped: usable after a panic elsewhere.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer thread: waits for a first line, gives later lines until the interval ends
    /// (or a batch fills) to join it, writes them all at once.
    fn run(&self, mut sink: Sink) {
        let mut batch = Vec::with_capacity(BATCH_BYTES);
        loop {
            let closed = {
                let mut queue = self.lock();
                while queue.lines.is_empty() && !queue.closed {
                    queue.waiting = true;
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
                let deadline = Instant::now() + FLUSH_INTERVAL;
                while queue.lines.len() < BATCH_BYTES && !queue.closed {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    queue.waiting = true;
                    queue = self
                        .wake
                        .wait_timeout(queue, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                queue.waiting = false;
                std::mem::swap(&mut queue.lines, &mut batch);
                queue.closed
            };
            if !batch.is_empty() {
                // Nowhere to report a failing stdout: the lines are lost, the proxy goes on.
                let _ = sink.write_all(&batch).and_then(|()| sink.flush());
                batch.clear();
                if batch.capacity() > 2 * BATCH_BYTES {
                    batch = Vec::with_capacity(BATCH_BYTES);
                }
            }
            if closed {
                return;
            }
        }
    }
}

/// Formats the line of `r` as the process's log subscriber formats an INFO event of target
/// `access` with message "request complete": strings quoted and escaped, numbers and
/// request attributes bare, absent values left out.
pub(crate) fn format_line(out: &mut String, r: &RequestRecord, at: SystemTime) {
    let l = &r.labels;
    timestamp(out, at);
    out.push_str("  INFO access: request complete");
    if let Some(source) = r.source {
        out.push_str(" src.addr=\"");
        ip(out, source);
        out.push('"');
    }
    quoted(out, "src.identity", &l.source.principal);
    quoted(out, "src.workload", &l.source.workload);
    bare(out, "method", r.method.as_str());
    bare(out, "authority", r.authority.as_str());
    bare(out, "path", r.path.as_ref().map_or("/", |p| p.as_str()));
    quoted(out, "protocol", l.request_protocol);
    out.push_str(" status=");
    number(out, u64::from(l.response_code));
    quoted(out, "grpc_status", &l.grpc_response_status);
    let flags = if l.response_flags.is_empty() {
        "-"
    } else {
        &l.response_flags
    };
    bare(out, "flags", flags);
    quoted(out, "details", r.details);
    quoted(out, "route", r.route_name());
    quoted(out, "dst.service", &l.service.hostname);
    if let Some(upstream) = r.upstream {
        out.push_str(" upstream=\"");
        ip(out, upstream.ip());
        out.push(':');
        number(out, u64::from(upstream.port()));
        out.push('"');
    }
    quoted(out, "dst.workload", &l.destination.workload);
    out.push_str(" bytes_recv=");
    number(out, r.request_bytes);
    out.push_str(" bytes_sent=");
    number(out, r.response_bytes);
    out.push_str(" duration=");
    number(
        out,
        u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
    );
    out.push_str("ms");
    bare(
        out,
        "request_id",
        r.request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    bare(out, "trace_id", r.trace_id.as_str());
    out.push('\n');
}

/// ` name="value"` with the value escaped as Rust's `Debug` escapes strings; nothing when
/// empty.
fn quoted(out: &mut String, name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(value);
    } else {
        let _ = write!(out, "{}", value.escape_debug());
    }
    out.push('"');
}

/// ` name=value`, with control characters escaped so that a line stays one line.
fn bare(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push('=');
    if value.chars().any(char::is_control) {
        for c in value.chars() {
            if c.is_control() {
                let _ = write!(out, "{}", c.escape_default());
            } else {
                out.push(c);
            }
        }
    } else {
        out.push_str(value);
    }
}

/// Appends `n` in decimal (the formatter's machinery is most of the cost of a line).
fn number(out: &mut String, n: u64) {
    padded(out, n, 1);
}

/// Appends `n` in decimal, with leading zeros to at least `width` digits (at most 20).
fn padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 || start == digits.len() {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    start = start.min(digits.len().saturating_sub(width));
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// Appends an IP address as `Display` writes it.
fn ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                number(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// RFC 3339 in UTC with microseconds (`2026-11-22T10:15:30.123456Z`), as the log
/// subscriber writes its timestamps. The part up to the second is kept per thread: lines
/// within one second share it.
fn timestamp(out: &mut String, at: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|second| match second.try_borrow_mut() {
        Ok(mut second) => {
            if second.0 != secs {
                second.1.clear();
                up_to_the_second(&mut second.1, secs);
                second.0 = secs;
            }
            out.push_str(&second.1);
        }
        Err(_) => up_to_the_second(out, secs),
    });
    padded(out, u64::from(since.subsec_micros()), 6);
    out.push('Z');
}

/// `2026-11-22T10:15:30.` for `secs` after the epoch.
fn up_to_the_second(out: &mut String, secs: u64) {
    let (year, month, day) = civil(secs / 86_400);
    let of_day = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
    );
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use test_support::capture::{Captured, logged};

    use super::super::labels::{PeerLabels, RequestLabels, ServiceLabels};
    use super::super::record::{Authority, TraceId};
    use super::super::routes::RouteTelemetry;
    use super::*;
    use crate::engine::WorkloadMeta;

    /// A sink that writes only while its gate is free.
    #[derive(Clone)]
    struct Gated(Arc<Mutex<()>>, Captured);

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.0.lock().unwrap();
            self.1.write(buf)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record() -> RequestRecord {
        let source = WorkloadMeta {
            workload: "web".into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        RequestRecord {
            labels: RequestLabels {
                source: Arc::new(PeerLabels::new(
                    Some(&source),
                    "spiffe://cluster.local/ns/shop/sa/web".into(),
                )),
                service: Arc::new(ServiceLabels::new(
                    "reviews.shop.svc.cluster.local",
                    "reviews",
                    "shop",
                )),
                destination: Arc::new(PeerLabels::new(
                    Some(&WorkloadMeta {
                        workload: "reviews-v1".into(),
                        ..Default::default()
                    }),
                    String::new(),
                )),
                response_code: 503,
                grpc_response_status: "14".into(),
                response_flags: "UF,URX".into(),
                ..Default::default()
            },
            method: http::Method::GET,
            authority: Authority::Host(http::HeaderValue::from_static("reviews:9080")),
            path: Some(http::uri::PathAndQuery::from_static("/a?b=c")),
            source: Some("10.0.9.9".parse().unwrap()),
            upstream: Some("10.0.1.1:9080".parse::<SocketAddr>().unwrap()),
            route: Some(RouteTelemetry::uncounted("all \"of\" it")),
            request_id: Some(http::HeaderValue::from_static("id-1")),
            trace_id: TraceId::from_hex(b"0af7651916cd43dd8448eb211c80319c"),
            details: "upstream_reset",
            duration: Duration::from_millis(12),
            request_bytes: 3,
            response_bytes: 5,
            ..Default::default()
        }
    }

    #[test]
    fn the_line_reads_like_the_other_log_lines() {
        let mut line = String::new();
        let at = UNIX_EPOCH + Duration::from_micros(1_795_345_530_123_456);
        format_line(&mut line, &record(), at);
        assert_eq!(
            line,
            "2026-11-22T11:05:30.123456Z  INFO access: request complete \
             src.addr=\"10.0.9.9\" src.identity=\"spiffe://cluster.local/ns/shop/sa/web\" \
             src.workload=\"web\" method=GET authority=reviews:9080 path=/a?b=c \
             protocol=\"http\" status=503 grpc_status=\"14\" flags=UF,URX \
             details=\"upstream_reset\" route=\"all \\\"of\\\" it\" \
             dst.service=\"reviews.shop.svc.cluster.local\" upstream=\"10.0.1.1:9080\" \
             dst.workload=\"reviews-v1\" bytes_recv=3 bytes_sent=5 duration=12ms request_id=id-1 \
             trace_id=0af7651916cd43dd8448eb211c80319c\n"
        );
        // Numbers and addresses as `Display` writes them.
        for n in [0, 7, 10, 65_535, u64::MAX] {
            let mut text = String::new();
            number(&mut text, n);
            assert_eq!(text, n.to_string());
        }
        let mut micros = String::new();
        padded(&mut micros, 4_567, 6);
        assert_eq!(micros, "004567");
        for addr in [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "fd00::7",
            "::ffff:10.0.0.1",
        ] {
            let parsed: IpAddr = addr.parse().unwrap();
            let mut text = String::new();
            ip(&mut text, parsed);
            assert_eq!(text, parsed.to_string());
        }
        // Day boundaries and leap years.
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_454), (2026, 1, 1));
    }

    /// The same record as an event of the process's log subscriber: the line is the one it
    /// would write, and its time stamp reads as the subscriber's does.
    #[test]
    fn the_line_is_the_subscriber_s_line() {
        let r = record();
        let l = &r.labels;
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let before = SystemTime::now();
        let theirs = logged(|| {
            tracing::event!(
                target: "access",
                tracing::Level::INFO,
                src.addr = r.source.map(|s| s.to_string()),
                src.identity = some(&l.source.principal),
                src.workload = some(&l.source.workload),
                method = %r.method,
                authority = %r.authority.as_str(),
                path = %r.path.as_ref().map_or("/", |p| p.as_str()),
                protocol = l.request_protocol,
                status = l.response_code,
                grpc_status = some(&l.grpc_response_status),
                flags = %l.response_flags,
                details = (!r.details.is_empty()).then_some(r.details),
                route = Some(r.route_name()).filter(|n| !n.is_empty()),
                dst.service = some(&l.service.hostname),
                upstream = r.upstream.map(|u| u.to_string()),
                dst.workload = some(&l.destination.workload),
                bytes_recv = r.request_bytes,
                bytes_sent = r.response_bytes,
                duration = %format_args!("{}ms", r.duration.as_millis()),
                request_id = %r.request_id.as_ref().and_then(|v| v.to_str().ok()).unwrap_or(""),
                trace_id = %r.trace_id.as_str(),
                "request complete"
            );
        });
        let after = SystemTime::now();
        let ours = |at: SystemTime| {
            let mut line = String::new();
            format_line(&mut line, &r, at);
            line
        };
        let (earliest, latest) = (ours(before), ours(after));
        let split = |line: &str| {
            line.split_once(' ')
                .map(|(t, rest)| (t.to_owned(), rest.to_owned()))
        };
        let (their_time, their_rest) = split(&theirs).unwrap();
        let (first_time, rest) = split(&earliest).unwrap();
        assert_eq!(rest, their_rest, "{theirs}");
        // Same layout and width: the subscriber's stamp, taken in between, sorts in between.
        let last_time = split(&latest).unwrap().0;
        assert_eq!(their_time.len(), first_time.len(), "{theirs}");
        assert!(
            first_time <= their_time && their_time <= last_time,
            "{first_time} {their_time} {last_time}"
        );
    }

    #[test]
    fn lines_reach_the_sink_in_order_and_a_full_queue_drops() {
        let sink = Captured::default();
        let log = AccessLog::new(Box::new(sink.clone()), CAPACITY);
        for i in 0..3 {
            let mut r = record();
            r.request_bytes = i;
            log.write(&r, SystemTime::now());
        }
        // Dropping the log writes out what is queued.
        drop(log);
        let text = sink.text();
        let sent: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" bytes_recv=")?.1.split(' ').next())
            .collect();
        assert_eq!(sent, ["0", "1", "2"], "{text}");
        assert!(
            text.lines()
                .all(|l| l.ends_with("trace_id=0af7651916cd43dd8448eb211c80319c"))
        );

        // Room for one line only, and a sink that blocks until the test lets it go: the
        // writer holds at most one line and the queue one more, so at least three of five
        // are dropped and counted, however the threads are scheduled.
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let sink = Gated(gate.clone(), Captured::default());
        let mut one = String::new();
        format_line(&mut one, &record(), SystemTime::now());
        let log = AccessLog::new(Box::new(sink.clone()), one.len() + 1);
        for _ in 0..5 {
            log.write(&record(), SystemTime::now());
        }
        let dropped = log.dropped();
        assert!(dropped >= 3, "{dropped}");
        drop(held);
        drop(log);
        let written = sink.1.text();
        assert_eq!(written.lines().count() as u64 + dropped, 5, "{written}");
    }
}
