//! Serving HTTP on one tunnel within the waypoint's limits: HTTP/2 gets the preface, SETTINGS
//! and header-block deadlines of an [`hbone::frames::FrameGuard`], both protocols get the
//! idle timeout (no request in progress: GOAWAY or close), and whatever a limit ends is
//! counted by reason.
//!
//! HTTP/1.1's own bounds are hyper's: the request-head deadline (which also closes idle
//! keep-alive connections) and the head size.

use std::sync::Arc;

use hbone::frames::{FrameGuard, FrameLimits, Tripped};
use hbone::{Limit, LimitCounters, ServerLimits};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::engine::{Body, BoxError};

/// The listener kind of the waypoint's HTTP serving in the proxy's limit metrics.
pub const HTTP_LISTENER: &str = "http";

/// Requests in progress on one connection. A request counts from its arrival until its
/// response body is done, so a long download or stream never looks idle.
#[derive(Clone)]
pub struct Activity(Arc<watch::Sender<usize>>);

impl Default for Activity {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(0)))
    }
}

impl Activity {
    /// Counts one more request in progress until the returned guard is dropped.
    pub fn start(&self) -> ActiveRequest {
        self.0.send_modify(|n| *n += 1);
        ActiveRequest(self.clone())
    }

    /// `body`, keeping `request` counted until the body is done or dropped.
    pub fn track(request: ActiveRequest, body: Body) -> Body {
        use http_body_util::BodyExt;
        body.map_frame(move |frame| {
            let _held = &request;
            frame
        })
        .boxed()
    }

    /// Resolves once no request has been in progress for `period`.
    async fn idle_for(&self, period: std::time::Duration) {
        let mut busy = self.0.subscribe();
        loop {
            // The sender lives as long as `self`: these waits cannot fail.
            let _ = busy.wait_for(|n| *n == 0).await;
            tokio::select! {
                () = tokio::time::sleep(period) => return,
                _ = busy.wait_for(|n| *n > 0) => {}
            }
        }
    }
}

/// One request in progress (see [`Activity::start`]).
pub struct ActiveRequest(Activity);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What a connection is served with.
pub struct Serving<'a> {
    /// HTTP/1.1 and HTTP/2 settings.
    pub builder: &'a auto::Builder<TokioExecutor>,
    /// Deadlines and HTTP/2 bounds.
    pub limits: &'a ServerLimits,
    /// Largest request head (HTTP/1.1) or header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Where the connections the limits end are counted.
    pub counters: &'a LimitCounters,
    /// Turns true when the waypoint drains.
    pub drain: watch::Receiver<bool>,
}

/// How a connection ended.
enum Ended {
    /// The client left, or we drained.
    Closed,
    /// Idle past the timeout.
    Idle,
    /// hyper gave up on it.
    Error(BoxError),
}

/// Serves `stream` (HTTP/2 prior knowledge when `http2`) until the client leaves, the
/// waypoint drains, or a limit ends it.
pub async fn serve<S, Svc, F>(
    serving: Serving<'_>,
    stream: S,
    http2: bool,
    activity: Activity,
    service: Svc,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    Svc: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future = F,
        > + Clone
        + Send
        + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let (ended, tripped) = if http2 {
        let limits = serving.limits;
        let guarded = FrameGuard::new(
            stream,
            FrameLimits {
                handshake_timeout: limits.http2_handshake_timeout,
                header_block_timeout: limits.header_block_timeout,
                max_header_block_bytes: serving.max_header_bytes.saturating_mul(2),
            },
        );
        let tripped = guarded.tripped();
        (
            drive(&serving, guarded, &activity, service).await,
            Some(tripped),
        )
    } else {
        (drive(&serving, stream, &activity, service).await, None)
    };
    if let Some(limit) = limit_of(ended, tripped.as_ref()) {
        serving.counters.record(limit);
        tracing::debug!(%limit, "HTTP connection closed by a limit");
    }
}

/// Runs hyper on `io`; when no request has been in progress for the idle timeout, asks it to
/// close (GOAWAY for HTTP/2), and cuts the connection if that has not happened a grace
/// period later with still nothing in progress.
async fn drive<I, Svc, F>(serving: &Serving<'_>, io: I, activity: &Activity, service: Svc) -> Ended
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    Svc: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future = F,
        > + Clone
        + Send
        + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let connection = serving
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let mut drain = serving.drain.clone();
    let mut draining = false;
    let mut idle_goaway = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                return match result {
                    _ if idle_goaway => Ended::Idle,
                    Ok(()) => Ended::Closed,
                    Err(e) => Ended::Error(e),
                };
            }
            () = wait_for_drain(&mut drain), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(serving.limits.idle_timeout), if !idle_goaway => {
                idle_goaway = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(serving.limits.idle_close_grace()), if idle_goaway => {
                // The client never answered the GOAWAY (or its PING): cut.
                return Ended::Idle;
            }
        }
    }
}

/// Resolves once the waypoint drains; never if the drain signal is gone.
async fn wait_for_drain(drain: &mut watch::Receiver<bool>) {
    if drain.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The limit that ended a connection, if one did: the frame guard's verdict first (its
/// failed reads surface as I/O errors), then idleness, then what hyper and h2 report.
fn limit_of(ended: Ended, tripped: Option<&Tripped>) -> Option<Limit> {
    if let Some(limit) = tripped.and_then(Tripped::get) {
        return Some(limit);
    }
    let error = match ended {
        Ended::Closed => return None,
        Ended::Idle => return Some(Limit::Idle),
        Ended::Error(error) => error,
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_timeout() {
                return Some(Limit::HeaderTimeout);
            }
            if e.is_parse_too_large() {
                return Some(Limit::HeaderTooLarge);
            }
        }
        if let Some(e) = e.downcast_ref::<h2::Error>()
            && e.is_go_away()
            && e.is_library()
            && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
        {
            return Some(Limit::Http2Abuse);
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn activity_is_idle_only_without_requests_for_the_whole_period() {
        let activity = Activity::default();
        let period = Duration::from_secs(10);
        let request = activity.start();
        let idle = tokio::spawn({
            let activity = activity.clone();
            async move { activity.idle_for(period).await }
        });
        tokio::time::sleep(period * 3).await;
        assert!(!idle.is_finished(), "a request is in progress");
        drop(request);
        tokio::time::sleep(period / 2).await;
        let again = activity.start();
        tokio::time::sleep(period).await;
        assert!(!idle.is_finished(), "busy again before the period ran out");
        drop(again);
        idle.await.unwrap();
    }

    #[test]
    fn a_tracked_body_holds_its_request_until_dropped() {
        use http_body_util::{BodyExt, Full};
        let activity = Activity::default();
        let body = Full::new(bytes::Bytes::from_static(b"x"))
            .map_err(|e| match e {})
            .boxed();
        let body = Activity::track(activity.start(), body);
        assert_eq!(*activity.0.borrow(), 1);
        drop(body);
        assert_eq!(*activity.0.borrow(), 0);
    }

    #[test]
    fn ends_map_to_limits() {
        let tripped = Tripped::default();
        assert_eq!(limit_of(Ended::Closed, Some(&tripped)), None);
        assert_eq!(limit_of(Ended::Idle, None), Some(Limit::Idle));
        let other: BoxError = "boom".into();
        assert_eq!(limit_of(Ended::Error(other), None), None);
    }
}
