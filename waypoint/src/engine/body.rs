//! The body type flowing through the engine, and request bodies that can be sent more than
//! once (retries, mirrors).
//!
//! The body is streamed to the first attempt as it arrives while a copy of up to
//! [`REPLAY_LIMIT`] bytes is kept, so a retry can resend it and a mirror can copy it once it is
//! complete. A larger body is streamed but can no longer be replayed: retries stop, and no
//! mirror copy is sent.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;

/// Body type flowing through the engine.
pub type Body = BoxBody<Bytes, BoxError>;
/// Error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Most bytes of a request body kept for replay.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// An empty body.
pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

/// A body of `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A complete body kept in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffered {
    /// Data.
    pub data: Vec<Bytes>,
    /// Trailers.
    pub trailers: Option<HeaderMap>,
}

impl Buffered {
    /// A body replaying it.
    pub(crate) fn body(&self) -> Body {
        let frames: VecDeque<Frame<Bytes>> = self
            .data
            .iter()
            .cloned()
            .map(Frame::data)
            .chain(self.trailers.clone().map(Frame::trailers))
            .collect();
        FramesBody(frames).boxed()
    }
}

struct FramesBody(VecDeque<Frame<Bytes>>);

impl HttpBody for FramesBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a mirror waiting for the body sees.
#[derive(Debug, Clone)]
pub(crate) enum Completion {
    /// Still arriving.
    Pending,
    /// Complete and kept.
    Ready(Arc<Buffered>),
    /// Too large, failed, or abandoned: no copy.
    Lost,
}

/// The body being recorded, shared by every attempt's handle and the mirrors' wait.
struct Recording {
    source: Body,
    /// Recorded frames; `frames[i]` has absolute index `dropped + i`.
    frames: Vec<Frame<Bytes>>,
    dropped: usize,
    size: usize,
    done: bool,
    overflow: bool,
    failed: bool,
    completion: watch::Sender<Completion>,
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.done || self.overflow {
            self.completion.send_replace(Completion::Lost);
        }
    }
}

/// A request body that can be handed to several attempts in turn.
#[derive(Clone)]
pub(crate) struct Replay {
    shared: Arc<Mutex<Recording>>,
    completion: watch::Receiver<Completion>,
}

impl Replay {
    /// Starts recording `body`.
    pub(crate) fn new(body: Body) -> Self {
        let (tx, rx) = watch::channel(Completion::Pending);
        Self {
            shared: Arc::new(Mutex::new(Recording {
                source: body,
                frames: Vec::new(),
                dropped: 0,
                size: 0,
                done: false,
                overflow: false,
                failed: false,
                completion: tx,
            })),
            completion: rx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another attempt could send the whole body again.
    pub(crate) fn replayable(&self) -> bool {
        let s = self.lock();
        !s.overflow && !s.failed
    }

    /// A body for the next attempt, from the first byte.
    pub(crate) fn attempt(&self) -> Body {
        AttemptBody {
            shared: self.shared.clone(),
            pos: 0,
        }
        .boxed()
    }

    /// Waits for the complete body (for a mirror); `None` when it will never be complete.
    pub(crate) fn completion(
        &self,
    ) -> impl std::future::Future<Output = Option<Arc<Buffered>>> + Send + 'static {
        let mut rx = self.completion.clone();
        async move {
            loop {
                match &*rx.borrow_and_update() {
                    Completion::Ready(b) => return Some(b.clone()),
                    Completion::Lost => return None,
                    Completion::Pending => {}
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        }
    }
}

struct AttemptBody {
    shared: Arc<Mutex<Recording>>,
    pos: usize,
}

impl HttpBody for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let shared = self.shared.clone();
        let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
        let recorded = s.dropped + s.frames.len();
        if self.pos < s.dropped {
            return Poll::Ready(Some(Err("request body too large to send again".into())));
        }
        if self.pos < recorded {
            let frame = clone_frame(&s.frames[self.pos - s.dropped]);
            self.pos += 1;
            return Poll::Ready(Some(Ok(frame)));
        }
        if s.done {
            return Poll::Ready(None);
        }
        if s.failed {
            return Poll::Ready(Some(Err("request body failed".into())));
        }
        match Pin::new(&mut s.source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.done = true;
                if !s.overflow {
                    let mut kept = Buffered::default();
                    for f in &s.frames {
                        if let Some(d) = f.data_ref() {
                            kept.data.push(d.clone());
                        } else if let Some(t) = f.trailers_ref() {
                            kept.trailers = Some(t.clone());
                        }
                    }
                    s.completion.send_replace(Completion::Ready(Arc::new(kept)));
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.failed = true;
                s.completion.send_replace(Completion::Lost);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                s.size += frame.data_ref().map_or(0, Bytes::len);
                if !s.overflow && s.size > REPLAY_LIMIT {
                    // Stop keeping a copy; only this attempt can go on.
                    s.overflow = true;
                    s.dropped += s.frames.len();
                    s.frames = Vec::new();
                    s.completion.send_replace(Completion::Lost);
                }
                if s.overflow {
                    s.dropped += 1;
                } else {
                    s.frames.push(clone_frame(&frame));
                }
                self.pos += 1;
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        s.done && self.pos >= s.dropped + s.frames.len()
    }

    fn size_hint(&self) -> SizeHint {
        let s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if s.done && !s.overflow {
            let rest: usize = s
                .frames
                .iter()
                .skip(self.pos.saturating_sub(s.dropped))
                .filter_map(Frame::data_ref)
                .map(Bytes::len)
                .sum();
            SizeHint::with_exact(rest as u64)
        } else {
            s.source.size_hint()
        }
    }
}

fn clone_frame(f: &Frame<Bytes>) -> Frame<Bytes> {
    if let Some(d) = f.data_ref() {
        Frame::data(d.clone())
    } else if let Some(t) = f.trailers_ref() {
        Frame::trailers(t.clone())
    } else {
        Frame::data(Bytes::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> Body {
        Buffered {
            data: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            trailers: None,
        }
        .body()
    }

    #[tokio::test]
    async fn replays_small_bodies_and_completes_mirrors() {
        let replay = Replay::new(chunks(&["hello", " ", "world"]));
        let mirror = tokio::spawn(replay.completion());
        let first = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(first, "hello world");
        assert!(replay.replayable());
        let second = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(second, "hello world");
        let copy = mirror.await.unwrap().unwrap();
        assert_eq!(
            copy.body().collect().await.unwrap().to_bytes(),
            "hello world"
        );
    }

    #[tokio::test]
    async fn a_retry_continues_a_partly_read_body() {
        let replay = Replay::new(chunks(&["a", "b", "c"]));
        let mut first = replay.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        drop(first);
        let all = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(all, "abc");
    }

    #[tokio::test]
    async fn large_bodies_stream_once() {
        let big = Bytes::from(vec![7u8; REPLAY_LIMIT + 1]);
        let replay = Replay::new(full(big.clone()));
        let mirror = replay.completion();
        let got = replay.attempt().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), big.len());
        assert!(!replay.replayable());
        assert!(replay.attempt().collect().await.is_err());
        assert!(mirror.await.is_none());
    }

    #[tokio::test]
    async fn abandoned_bodies_release_mirrors() {
        let replay = Replay::new(full("x"));
        let mirror = replay.completion();
        drop(replay);
        assert!(mirror.await.is_none());
    }
}
