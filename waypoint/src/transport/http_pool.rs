//! HTTP client connections to endpoints, kept for reuse: HTTP/1.1 connections return to a
//! bounded idle set once their response has been read to the end; HTTP/2 connections are
//! shared by concurrent requests. Idle connections are closed after a while.
//!
//! Connections are keyed by endpoint and by caller IP as well: the tunnel under each one
//! carries one caller's address forward (`forwarded`), so callers never share one.
//!
//! A request carrying [`UpstreamHints`] with `max_requests_per_connection` retires its
//! connection once that many requests have used it (Istio's `maxRequestsPerConnection`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::io::BoxedIo;
use crate::engine::{Body, BoxError, UpstreamError, UpstreamHints};

/// Tunables of the pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Idle HTTP/1.1 connections kept per key.
    pub max_idle_per_key: usize,
    /// Idle HTTP/1.1 connections kept in all.
    pub max_idle_total: usize,
    /// HTTP/2 connections kept in all (one per key).
    pub max_http2: usize,
    /// A connection unused for this long is closed.
    pub idle_timeout: Duration,
    /// Bound on a response head (HTTP/1.1 read buffer) and header list (HTTP/2).
    pub max_header_bytes: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_idle_per_key: 16,
            max_idle_total: 1024,
            max_http2: 1024,
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Which connections may carry a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The endpoint (pod IP and port).
    pub endpoint: SocketAddr,
    /// The endpoint's workload uid (a new pod at the same IP is another endpoint).
    pub uid: String,
    /// The original caller's IP, carried on the tunnel.
    pub caller: IpAddr,
    /// HTTP/2 rather than HTTP/1.1.
    pub http2: bool,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
    /// Requests it has carried.
    served: u32,
}

/// The HTTP/2 connection of a key, shared by its concurrent requests.
struct Http2Connection {
    sender: http2::SendRequest<Body>,
    last_used: Instant,
    /// Requests it has carried.
    served: u32,
}

#[derive(Default)]
struct IdleSet {
    by_key: HashMap<PoolKey, Vec<Idle>>,
    total: usize,
}

/// Reusable HTTP connections to endpoints. Must be created within a tokio runtime (a
/// background task closes idle connections).
pub struct HttpPool {
    settings: PoolSettings,
    idle: Mutex<IdleSet>,
    http2: Mutex<HashMap<PoolKey, Http2Connection>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each map is updated in single steps: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HttpPool {
    /// An empty pool.
    pub fn new(settings: PoolSettings) -> Arc<Self> {
        let pool = Arc::new(Self {
            settings,
            idle: Mutex::new(IdleSet::default()),
            http2: Mutex::new(HashMap::new()),
        });
        tokio::spawn(sweep(Arc::downgrade(&pool)));
        pool
    }

    /// Sends `request` on a connection of `key`, reusing one when possible, else on a new
    /// connection over the stream `open` returns.
    pub async fn send<F, Fut>(
        self: &Arc<Self>,
        key: PoolKey,
        request: Request<Body>,
        open: F,
    ) -> Result<Response<Body>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<BoxedIo, UpstreamError>>,
    {
        let limit = request
            .extensions()
            .get::<UpstreamHints>()
            .map_or(0, |h| h.max_requests_per_connection);
        if key.http2 {
            self.send_http2(key, request, limit, open).await
        } else {
            self.send_http1(key, request, limit, open).await
        }
    }

    /// Connections currently idle (HTTP/1.1) or shared (HTTP/2).
    pub fn connection_count(&self) -> usize {
        lock(&self.idle).total + lock(&self.http2).len()
    }

    async fn send_http1<F, Fut>(
        self: &Arc<Self>,
        key: PoolKey,
        mut request: Request<Body>,
        limit: u32,
        open: F,
    ) -> Result<Response<Body>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<BoxedIo, UpstreamError>>,
    {
        // Idle connections first; a request one of them did not take goes to the next.
        while let Some((mut sender, served)) = self.checkout(&key) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let checkout = Checkout::new(self, key, sender, served + 1, limit);
                    return Ok(checkout.returning(response));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(UpstreamError::Request(e.into_error().to_string())),
                },
            }
        }
        let io = open().await?;
        let (mut sender, connection) = http1::Builder::new()
            .max_buf_size(self.settings.max_header_bytes.max(8192))
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/1.1 handshake: {e}")))?;
        drive(connection, "HTTP/1.1");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        Ok(Checkout::new(self, key, sender, 1, limit).returning(response))
    }

    async fn send_http2<F, Fut>(
        self: &Arc<Self>,
        key: PoolKey,
        mut request: Request<Body>,
        limit: u32,
        open: F,
    ) -> Result<Response<Body>, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<BoxedIo, UpstreamError>>,
    {
        if let Some(mut sender) = self.shared(&key, limit) {
            // A connection going away hands back requests it did not start.
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(boxed(response)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        lock(&self.http2).remove(&key);
                        request = unsent;
                    }
                    None => return Err(UpstreamError::Request(e.into_error().to_string())),
                },
            }
        }
        let io = open().await?;
        let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.settings.max_header_bytes).unwrap_or(u32::MAX))
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Connect(format!("HTTP/2 handshake: {e}")))?;
        drive(connection, "HTTP/2");
        // A connection allowed a single request is not worth sharing.
        if limit != 1 {
            let mut map = lock(&self.http2);
            if map.len() < self.settings.max_http2 || map.contains_key(&key) {
                map.insert(
                    key,
                    Http2Connection {
                        sender: sender.clone(),
                        last_used: Instant::now(),
                        served: 1,
                    },
                );
            }
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(e.to_string()))?;
        Ok(boxed(response))
    }

    /// The shared HTTP/2 connection of `key`, counted as carrying one more request; retired
    /// from sharing when that request is its last.
    fn shared(&self, key: &PoolKey, limit: u32) -> Option<http2::SendRequest<Body>> {
        let mut map = lock(&self.http2);
        let shared = map.get_mut(key)?;
        if shared.sender.is_closed() {
            map.remove(key);
            return None;
        }
        shared.last_used = Instant::now();
        shared.served += 1;
        let sender = shared.sender.clone();
        if limit > 0 && shared.served >= limit {
            map.remove(key);
        }
        Some(sender)
    }

    /// An idle connection of `key`, if any is still open, and the requests it has carried.
    fn checkout(&self, key: &PoolKey) -> Option<(http1::SendRequest<Body>, u32)> {
        let mut idle = lock(&self.idle);
        let IdleSet { by_key, total } = &mut *idle;
        let list = by_key.get_mut(key)?;
        let mut found = None;
        while let Some(entry) = list.pop() {
            *total -= 1;
            if !entry.sender.is_closed() && entry.since.elapsed() < self.settings.idle_timeout {
                found = Some((entry.sender, entry.served));
                break;
            }
        }
        if list.is_empty() {
            by_key.remove(key);
        }
        found
    }

    /// Puts the connection of `checkout` back among the idle ones, if it may carry more
    /// requests and there is room.
    fn checkin(&self, checkout: Checkout) {
        let Checkout {
            key,
            sender,
            served,
            limit,
            ..
        } = checkout;
        if sender.is_closed() || (limit > 0 && served >= limit) {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.total >= self.settings.max_idle_total {
            return;
        }
        let per_key = self.settings.max_idle_per_key;
        let list = idle.by_key.entry(key).or_default();
        if list.len() >= per_key {
            return;
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
            served,
        });
        idle.total += 1;
    }

    /// Closes connections idle for longer than the timeout.
    fn sweep_once(&self) {
        let timeout = self.settings.idle_timeout;
        {
            let mut idle = lock(&self.idle);
            let IdleSet { by_key, total } = &mut *idle;
            by_key.retain(|_, list| {
                let before = list.len();
                list.retain(|e| !e.sender.is_closed() && e.since.elapsed() < timeout);
                *total -= before - list.len();
                !list.is_empty()
            });
        }
        lock(&self.http2)
            .retain(|_, shared| !shared.sender.is_closed() && shared.last_used.elapsed() < timeout);
    }
}

/// Runs [`HttpPool::sweep_once`] periodically while the pool exists.
async fn sweep(pool: Weak<HttpPool>) {
    let period = match pool.upgrade() {
        Some(pool) => (pool.settings.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep_once(),
            None => return,
        }
    }
}

/// Runs an upstream connection in the background until it ends.
fn drive<C>(connection: C, protocol: &'static str)
where
    C: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}

fn boxed(response: Response<Incoming>) -> Response<Body> {
    response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed())
}

/// An HTTP/1.1 connection busy with one request, to give back to its pool afterwards.
struct Checkout {
    pool: Weak<HttpPool>,
    key: PoolKey,
    sender: http1::SendRequest<Body>,
    /// Requests it has carried, this one included.
    served: u32,
    /// `max_requests_per_connection` of this request; 0: no limit.
    limit: u32,
}

impl Checkout {
    fn new(
        pool: &Arc<HttpPool>,
        key: PoolKey,
        sender: http1::SendRequest<Body>,
        served: u32,
        limit: u32,
    ) -> Self {
        Self {
            pool: Arc::downgrade(pool),
            key,
            sender,
            served,
            limit,
        }
    }

    /// The response, its body giving the connection back once read to the end.
    fn returning(self, response: Response<Incoming>) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let mut body = Returning {
            body,
            checkout: Some(self),
        };
        if body.body.is_end_stream() {
            body.give_back();
        }
        Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
    }
}

/// A response body that gives its connection back to the pool at its end. Dropped early,
/// it takes the connection with it (the rest of the response is unread, so the connection
/// cannot carry another request).
struct Returning {
    body: Incoming,
    checkout: Option<Checkout>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some(checkout) = self.checkout.take()
            && let Some(pool) = checkout.pool.upgrade()
        {
            pool.checkin(checkout);
        }
    }
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.checkout = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// An HTTP/1.1 and HTTP/2 server on loopback answering "ok", counting the connections it
    /// accepts.
    async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn get() -> Request<Body> {
        Request::get("/")
            .header(http::header::HOST, "orders")
            .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
            .unwrap()
    }

    async fn open(addr: SocketAddr) -> Result<BoxedIo, UpstreamError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        Ok(Box::new(tcp))
    }

    fn key(addr: SocketAddr) -> PoolKey {
        PoolKey {
            endpoint: addr,
            uid: "Kubernetes//Pod/shop/orders-v1".into(),
            caller: "10.0.0.1".parse().unwrap(),
            http2: false,
        }
    }

    #[tokio::test]
    async fn http1_connections_return_once_their_response_is_read() {
        let (addr, accepted) = server().await;
        let pool = HttpPool::new(PoolSettings::default());
        for _ in 0..3 {
            let response = pool.send(key(addr), get(), || open(addr)).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.connection_count(), 1);

        // A response not yet read holds its connection: a second request needs another.
        let unread = pool.send(key(addr), get(), || open(addr)).await.unwrap();
        let read = pool.send(key(addr), get(), || open(addr)).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        read.into_body().collect().await.unwrap();
        // Dropped unread, the first cannot carry another request and is not kept.
        drop(unread);
        assert_eq!(pool.connection_count(), 1);

        // Another caller gets its own connection.
        let mut other = key(addr);
        other.caller = "10.0.0.2".parse().unwrap();
        let response = pool.send(other, get(), || open(addr)).await.unwrap();
        response.into_body().collect().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_the_idle_set_is_bounded() {
        let (addr, _) = server().await;
        let pool = HttpPool::new(PoolSettings {
            max_idle_per_key: 1,
            idle_timeout: Duration::from_millis(100),
            ..PoolSettings::default()
        });
        let first = pool.send(key(addr), get(), || open(addr)).await.unwrap();
        let second = pool.send(key(addr), get(), || open(addr)).await.unwrap();
        first.into_body().collect().await.unwrap();
        second.into_body().collect().await.unwrap();
        assert_eq!(pool.connection_count(), 1, "one idle connection per key");
        for _ in 0..500 {
            if pool.connection_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the idle connection was never closed");
    }

    #[tokio::test]
    async fn connections_retire_after_their_request_limit() {
        let limited = |http2: bool| {
            let mut request = get();
            if http2 {
                *request.version_mut() = http::Version::HTTP_2;
                *request.uri_mut() = "http://orders/".parse().unwrap();
            }
            request.extensions_mut().insert(UpstreamHints {
                max_requests_per_connection: 2,
                connect_timeout: None,
            });
            request
        };
        for http2 in [false, true] {
            let (addr, accepted) = server().await;
            let pool = HttpPool::new(PoolSettings::default());
            let mut key = key(addr);
            key.http2 = http2;
            for _ in 0..3 {
                let response = pool
                    .send(key.clone(), limited(http2), || open(addr))
                    .await
                    .unwrap();
                response.into_body().collect().await.unwrap();
            }
            // Two requests on the first connection, the third on a new one.
            assert_eq!(accepted.load(Ordering::SeqCst), 2, "http2: {http2}");
            assert_eq!(pool.connection_count(), 1, "http2: {http2}");
        }
    }

    #[tokio::test]
    async fn connect_failures_are_reported_as_such() {
        let pool = HttpPool::new(PoolSettings::default());
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let failed = pool
            .send(key(addr), get(), || async {
                Err::<BoxedIo, _>(UpstreamError::Connect("refused".into()))
            })
            .await;
        assert!(matches!(failed, Err(UpstreamError::Connect(_))));
    }
}
