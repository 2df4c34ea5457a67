//! The client's side of a request: its body as it arrives, watched for faults that are the
//! client's own, so that they are never blamed on the upstream.
//!
//! Any error reading the request body comes from the downstream by construction: the
//! [`DownstreamBody`] wraps the body as the transport hands it over, before any attempt
//! reads it. When an attempt then fails, or a timeout expires while the waypoint was still
//! waiting for the client's bytes, [`Watch`] says so, and forwarding answers for the client's
//! fault (400 malformed, 408 too slow, nothing for a client that left) without counting the
//! attempt against the endpoint: no outlier detection, no retry, no retry budget spent.

use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::body::{Body, BoxError};

/// A fault on the client's side of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The body broke the protocol: bad chunked encoding, more or fewer bytes than its
    /// `content-length` (HTTP/2), an HTTP/2 protocol error on the stream.
    Malformed,
    /// The client reset the stream or closed the connection before its request was complete.
    Disconnected,
    /// The client took too long to send its body.
    Timeout,
}

impl Fault {
    /// Envoy's response flag: DPE (downstream protocol error), DC (downstream connection
    /// termination); Envoy's request timeout carries none, only its details.
    pub(crate) fn flag(self) -> &'static str {
        match self {
            Fault::Malformed => "DPE",
            Fault::Disconnected => "DC",
            Fault::Timeout => "",
        }
    }

    /// What `error`, read from a request body, says of the client.
    pub(crate) fn of(error: &(dyn StdError + 'static)) -> Fault {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(fault) = classify(e) {
                return fault;
            }
            next = e.source();
        }
        // Nothing wrong is known of the bytes: the body simply stopped arriving.
        Fault::Disconnected
    }
}

/// One error of the chain, when it decides.
fn classify(e: &(dyn StdError + 'static)) -> Option<Fault> {
    if let Some(h2) = e.downcast_ref::<h2::Error>() {
        // A reset or GOAWAY the client sent is the client leaving; one the HTTP/2 library
        // raised is a protocol violation it found in the client's frames.
        return Some(if h2.is_io() || h2.is_remote() {
            Fault::Disconnected
        } else {
            Fault::Malformed
        });
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return Some(match io.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => Fault::Malformed,
            io::ErrorKind::TimedOut => Fault::Timeout,
            _ => Fault::Disconnected,
        });
    }
    if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
        if hyper.is_parse() {
            return Some(Fault::Malformed);
        }
        if hyper.is_timeout() {
            return Some(Fault::Timeout);
        }
    }
    None
}

/// What the engine knows of the client's side of one request; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Watch(Arc<State>);

#[derive(Default)]
struct State {
    fault: OnceLock<Fault>,
    /// The last read of the body found no bytes ready: the waypoint waits for the client.
    waiting: AtomicBool,
}

impl Watch {
    /// The fault the body ended with, if it did.
    pub(crate) fn fault(&self) -> Option<Fault> {
        self.0.fault.get().copied()
    }

    /// The fault a timeout expiring now is: the client's when the body is unfinished and
    /// the waypoint is waiting for its bytes (not for the upstream to take them); `None`
    /// leaves the timeout to the upstream.
    pub(crate) fn timeout_fault(&self) -> Option<Fault> {
        self.fault().or_else(|| {
            self.0
                .waiting
                .load(Ordering::Relaxed)
                .then_some(Fault::Timeout)
        })
    }

    /// `body` with its faults recorded here.
    pub(crate) fn wrap(&self, body: Body) -> DownstreamBody {
        DownstreamBody {
            inner: body,
            watch: self.clone(),
        }
    }
}

/// The request body as the client sends it, recording its faults in a [`Watch`].
pub(crate) struct DownstreamBody {
    inner: Body,
    watch: Watch,
}

impl HttpBody for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let state = &self.watch.0;
        state.waiting.store(polled.is_pending(), Ordering::Relaxed);
        if let Poll::Ready(Some(Err(e))) = &polled {
            let fault = Fault::of(e.as_ref());
            tracing::debug!(error = %e, ?fault, "request body failed on the client's side");
            let _ = state.fault.set(fault);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body of `frames`, then the end, or (with `hang`) a client that sends nothing
/// more, for tests.
#[cfg(test)]
pub(crate) fn scripted(frames: Vec<Result<Bytes, BoxError>>, hang: bool) -> Body {
    use http_body_util::BodyExt;

    struct Scripted(std::collections::VecDeque<Result<Bytes, BoxError>>, bool);
    impl HttpBody for Scripted {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.0.pop_front() {
                Some(next) => Poll::Ready(Some(next.map(Frame::data))),
                // Never woken: the client never sends again.
                None if self.1 => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }
    Scripted(frames.into(), hang).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn errors_are_classified_along_their_chain() {
        let io = |kind| Box::new(io::Error::new(kind, "x")) as BoxError;
        assert_eq!(
            Fault::of(&*io(io::ErrorKind::InvalidData)),
            Fault::Malformed
        );
        assert_eq!(Fault::of(&*io(io::ErrorKind::TimedOut)), Fault::Timeout);
        assert_eq!(
            Fault::of(&*io(io::ErrorKind::ConnectionReset)),
            Fault::Disconnected
        );
        assert_eq!(
            Fault::of(&*io(io::ErrorKind::UnexpectedEof)),
            Fault::Disconnected
        );
        // A wrapper that says nothing itself leaves it to its cause.
        #[derive(Debug, thiserror::Error)]
        #[error("reading the body")]
        struct Wrapper(#[source] io::Error);
        let wrapped = Wrapper(io::Error::new(io::ErrorKind::InvalidInput, "bad chunk"));
        assert_eq!(Fault::of(&wrapped), Fault::Malformed);
        let unknown: BoxError = "gone".into();
        assert_eq!(Fault::of(&*unknown), Fault::Disconnected);
        let h2 = h2::Error::from(h2::Reason::PROTOCOL_ERROR);
        assert_eq!(Fault::of(&h2), Fault::Malformed);
    }

    #[tokio::test]
    async fn the_watch_records_the_fault_and_whether_the_client_is_awaited() {
        let watch = Watch::default();
        assert_eq!(watch.timeout_fault(), None);
        let error = io::Error::new(io::ErrorKind::InvalidData, "invalid chunk size line");
        let body = watch.wrap(scripted(
            vec![Ok(Bytes::from_static(b"abc")), Err(Box::new(error))],
            false,
        ));
        assert!(body.collect().await.is_err());
        assert_eq!(watch.fault(), Some(Fault::Malformed));
        assert_eq!(watch.timeout_fault(), Some(Fault::Malformed));

        let watch = Watch::default();
        let mut body = watch.wrap(scripted(vec![Ok(Bytes::from_static(b"a"))], true));
        assert!(body.frame().await.is_some());
        assert_eq!(watch.timeout_fault(), None, "nothing asked for since");
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx).is_pending()))
                .await;
        assert!(pending);
        assert_eq!(watch.timeout_fault(), Some(Fault::Timeout));
        assert_eq!(watch.fault(), None);
    }
}
