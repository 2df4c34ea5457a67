//! A small HTTP client over plain TCP, shared by `curl`, `load` and the echo
//! server's upstream call: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).

use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::error::AppError;

/// Largest response body read into memory by `load` and the echo upstream.
pub const MAX_BODY: usize = 1 << 20;

/// Where requests go, parsed once from an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host to connect to, without IPv6 brackets.
    host: String,
    /// TCP port (80 when the URL has none).
    port: u16,
    /// `host[:port]` as written in the URL: the default Host / `:authority`.
    authority: String,
    /// Path and query, `/` when the URL has none.
    path_and_query: String,
}

impl Target {
    /// Parses `http://host[:port][/path][?query]`; the scheme may be left out.
    pub fn parse(url: &str) -> Result<Self, AppError> {
        let invalid = |reason: &str| AppError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        // Accept `svc:8080/path` like curl does.
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: Uri = full
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(Target {
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_string(),
            path_and_query: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    /// `host[:port]` as written in the URL.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Path and query, `/` when the URL has none.
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// `host:port` for connecting, with brackets around IPv6 literals.
    pub fn connect_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a TCP connection to the target, Nagle off: requests and messages are small and
    /// must not wait for more to fill a segment.
    pub async fn connect(&self) -> Result<TcpStream, AppError> {
        let addr = self.connect_addr();
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| AppError::Connect { addr, source })?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Parses a curl-style header argument `"name: value"`.
pub fn parse_header(arg: &str) -> Result<(HeaderName, HeaderValue), AppError> {
    let invalid = || AppError::InvalidArgument(format!("header {arg:?}: expected \"name: value\""));
    let (name, value) = arg.split_once(':').ok_or_else(invalid)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| invalid())?;
    Ok((name, value))
}

/// A request to send, possibly many times (`load`).
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// Where it goes.
    pub target: Target,
    /// GET by default, POST when there is a body.
    pub method: Method,
    /// Extra headers from `-H`.
    pub headers: HeaderMap,
    /// The request body (`--data`).
    pub body: Bytes,
    /// Use HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
}

impl RequestTemplate {
    /// Builds a template from command-line style arguments.
    pub fn new(
        url: &str,
        method: Option<&str>,
        headers: &[String],
        data: Option<&str>,
        http2: bool,
    ) -> Result<Self, AppError> {
        let target = Target::parse(url)?;
        let method = match method {
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| AppError::InvalidArgument(format!("method {m:?}")))?,
            None if data.is_some() => Method::POST,
            None => Method::GET,
        };
        let mut map = HeaderMap::new();
        for h in headers {
            let (name, value) = parse_header(h)?;
            map.append(name, value);
        }
        Ok(RequestTemplate {
            target,
            method,
            headers: map,
            body: Bytes::from(data.unwrap_or_default().to_string()),
            http2,
        })
    }

    /// A fresh request from the template.
    ///
    /// HTTP/1.1 gets an origin-form URI and a Host header; HTTP/2 gets an
    /// absolute URI (hyper derives `:scheme` and `:authority` from it), and a
    /// user-given Host header becomes the `:authority`.
    pub fn build(&self) -> Result<Request<Full<Bytes>>, AppError> {
        let mut headers = self.headers.clone();
        let host = headers.remove(HOST);
        let mut builder = Request::builder().method(self.method.clone());
        if self.http2 {
            let authority = match &host {
                Some(h) => h.to_str().map_err(|_| {
                    AppError::InvalidArgument("Host header is not ASCII".to_string())
                })?,
                None => &self.target.authority,
            };
            let uri = format!("http://{authority}{}", self.target.path_and_query);
            builder = builder.uri(uri).version(Version::HTTP_2);
        } else {
            let host =
                host.unwrap_or(HeaderValue::from_str(&self.target.authority).map_err(|_| {
                    AppError::InvalidArgument("URL authority is not a valid Host".to_string())
                })?);
            builder = builder
                .uri(self.target.path_and_query.as_str())
                .header(HOST, host);
        }
        let mut request = builder.body(Full::new(self.body.clone()))?;
        request.headers_mut().extend(headers);
        Ok(request)
    }
}

/// A complete response, body read into memory.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response status.
    pub status: StatusCode,
    /// HTTP version the response came with.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// Response body (at most the cap the caller gave).
    pub body: Bytes,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One client connection, reusable for several requests.
pub struct Connection {
    sender: Sender,
}

impl Connection {
    /// Connects over TCP and performs the HTTP/1.1 or h2c handshake.
    pub async fn open(target: &Target, http2: bool) -> Result<Self, AppError> {
        let io = TokioIo::new(target.connect().await?);
        let sender = if http2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("h2 client connection ended: {e}");
                }
            });
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("http/1.1 client connection ended: {e}");
                }
            });
            Sender::H1(sender)
        };
        Ok(Connection { sender })
    }

    /// True once the connection cannot carry further requests.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Waits until the connection can take another request.
    pub async fn ready(&mut self) -> Result<(), AppError> {
        match &mut self.sender {
            Sender::H1(s) => s.ready().await?,
            Sender::H2(s) => s.ready().await?,
        }
        Ok(())
    }

    /// Sends one request and reads the whole response, at most `max_body`
    /// bytes of body.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Reply, AppError> {
        self.ready().await?;
        let response = match &mut self.sender {
            Sender::H1(s) => s.send_request(request).await?,
            Sender::H2(s) => s.send_request(request).await?,
        };
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map_err(|e| AppError::Body(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }
}

/// Runs `fut` with a deadline of `ms` milliseconds.
pub async fn with_timeout<T>(
    ms: u64,
    fut: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    tokio::time::timeout(Duration::from_millis(ms), fut)
        .await
        .map_err(|_| AppError::Timeout(ms))?
}

/// One request on a fresh connection, connect and body included in `timeout_ms`.
pub async fn fetch(
    template: &RequestTemplate,
    timeout_ms: u64,
    max_body: usize,
) -> Result<Reply, AppError> {
    with_timeout(timeout_ms, async {
        let mut conn = Connection::open(&template.target, template.http2).await?;
        conn.send(template.build()?, max_body).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://svc:8080/a/b?x=1").unwrap();
        assert_eq!(t.connect_addr(), "svc:8080");
        assert_eq!(t.authority, "svc:8080");
        assert_eq!(t.path_and_query, "/a/b?x=1");

        let t = Target::parse("svc").unwrap();
        assert_eq!(t.connect_addr(), "svc:80");
        assert_eq!(t.path_and_query, "/");

        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!(t.connect_addr(), "[::1]:9");
        assert_eq!(t.authority, "[::1]:9");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in ["https://svc/", "http://", "http://u:p@svc/", "http://sv c/"] {
            let err = Target::parse(url).unwrap_err();
            assert!(matches!(err, AppError::InvalidUrl { .. }), "{url}: {err}");
        }
    }

    #[test]
    fn parses_headers() {
        let (n, v) = parse_header("X-Test:  a b ").unwrap();
        assert_eq!(n, "x-test");
        assert_eq!(v, "a b");
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn builds_requests_per_protocol() {
        let hdrs = vec!["host: other".to_string(), "x-a: 1".to_string()];
        let t =
            RequestTemplate::new("http://svc:8080/p?q=1", None, &hdrs, Some("hi"), false).unwrap();
        assert_eq!(t.method, Method::POST);
        let r = t.build().unwrap();
        assert_eq!(r.uri(), "/p?q=1");
        assert_eq!(r.headers()[HOST], "other");
        assert_eq!(r.headers()["x-a"], "1");

        let t = RequestTemplate { http2: true, ..t };
        let r = t.build().unwrap();
        assert_eq!(r.uri(), "http://other/p?q=1");
        assert!(r.headers().get(HOST).is_none());
        assert_eq!(r.version(), Version::HTTP_2);
    }

    #[test]
    fn rejects_bad_methods() {
        let err = RequestTemplate::new("http://svc/", Some("GE T"), &[], None, false).unwrap_err();
        assert!(matches!(err, AppError::InvalidArgument(_)));
    }
}
