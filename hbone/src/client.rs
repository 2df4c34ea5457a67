//! Opening HBONE tunnels: dialing an mTLS HTTP/2 connection and sending `CONNECT` on it.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use h2::client::{Connection, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderValue, Method, Request, StatusCode};
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::cert::WorkloadCertificate;
use crate::error::Error;
use crate::identity::Identity;
use crate::settings;
use crate::tls::{ALPN_H2, client_config};

/// The peer a tunnel goes through.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// The peer's HBONE address: a pod's `ip:15008`, or a waypoint's.
    pub address: SocketAddr,
    /// Identities the peer may present; any other is refused during the handshake.
    pub identities: Vec<Identity>,
    /// Local address to connect from, when the source IP must be preserved.
    pub source_ip: Option<IpAddr>,
}

/// What the tunnel asks the peer for.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// The original destination (`:authority` of the `CONNECT`).
    pub target: SocketAddr,
    /// The original client's address, sent as `forwarded: for="ip:port"`; port 0 means the
    /// port is unknown, and only the IP is sent (`for=ip`, `for="[v6]"`, as RFC 7239 allows).
    pub forwarded_for: Option<SocketAddr>,
    /// W3C `baggage` to propagate (Istio puts workload metadata here).
    pub baggage: Option<String>,
    /// W3C `traceparent` to propagate.
    pub traceparent: Option<String>,
}

impl ConnectRequest {
    /// A request for `target` with no extra headers.
    pub fn new(target: SocketAddr) -> Self {
        Self {
            target,
            forwarded_for: None,
            baggage: None,
            traceparent: None,
        }
    }

    /// The HTTP/2 request: `CONNECT` with `:authority` = `ip:port` and no scheme or path
    /// (RFC 9113 §8.5).
    pub(crate) fn to_http(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        // An `ip:port` string always parses as an authority-only URI.
        if let Ok(uri) = self.target.to_string().parse() {
            *request.uri_mut() = uri;
        }
        let headers = request.headers_mut();
        if let Some(addr) = self.forwarded_for
            && let Ok(value) = HeaderValue::from_str(&crate::forwarded::header_value(addr))
        {
            headers.insert(http::header::FORWARDED, value);
        }
        for (name, value) in [
            ("baggage", &self.baggage),
            ("traceparent", &self.traceparent),
        ] {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(name, v);
            }
        }
        request
    }
}

/// Creates the TCP socket of each connection the client dials, given the peer's address.
///
/// A proxy that runs inside other network namespaces (or must mark its packets) supplies one,
/// so that sockets are born where, and with the options, its traffic rules expect. The
/// returned socket is not yet connected; the client binds it to `Upstream::source_ip` when
/// one is set, then connects.
#[derive(Clone)]
pub struct SocketFactory(Arc<dyn Fn(SocketAddr) -> io::Result<TcpSocket> + Send + Sync>);

impl SocketFactory {
    /// Wraps `create`, called once per dialed connection.
    pub fn new(
        create: impl Fn(SocketAddr) -> io::Result<TcpSocket> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(create))
    }

    /// A socket for a connection to `peer`.
    pub fn create(&self, peer: SocketAddr) -> io::Result<TcpSocket> {
        (self.0)(peer)
    }
}

impl fmt::Debug for SocketFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketFactory(..)")
    }
}

/// An established HBONE connection: the handle to open streams and the connection future
/// that must be polled to drive it.
pub(crate) type Dialed = (SendRequest<Bytes>, Connection<TlsStream<TcpStream>, Bytes>);

/// Connects to `upstream`, completes mTLS (presenting `cert`, verifying the peer's identity)
/// and the HTTP/2 handshake.
///
/// The TCP socket comes from `factory` when one is given, else a plain socket.
pub(crate) async fn dial(
    upstream: &Upstream,
    cert: &WorkloadCertificate,
    factory: Option<&SocketFactory>,
) -> Result<Dialed, Error> {
    let addr = upstream.address;
    let config = Arc::new(client_config(cert, &upstream.identities)?);
    let handshake = async {
        let tcp = connect_tcp(addr, upstream.source_ip, factory)
            .await
            .map_err(|source| Error::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        // SNI is disabled in the config; the name only satisfies the API.
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| Error::Tls { addr, source })?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(Error::NoH2(addr));
        }
        Ok(settings::client_builder().handshake(tls).await?)
    };
    tokio::time::timeout(settings::HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| Error::Timeout("HBONE handshake"))?
}

async fn connect_tcp(
    addr: SocketAddr,
    source_ip: Option<IpAddr>,
    factory: Option<&SocketFactory>,
) -> io::Result<TcpStream> {
    let socket = match factory {
        Some(factory) => factory.create(addr)?,
        None if addr.is_ipv4() => TcpSocket::new_v4()?,
        None => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source_ip {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

/// Sends the `CONNECT` on an established connection and waits for the peer's verdict:
/// 200 yields the stream halves, anything else is an [`Error::Status`].
pub(crate) async fn open_stream(
    sender: SendRequest<Bytes>,
    request: &ConnectRequest,
) -> Result<(SendStream<Bytes>, RecvStream), Error> {
    let mut sender = sender.ready().await?;
    let (response, send) = sender.send_request(request.to_http(), false)?;
    let response = response.await?;
    match response.status() {
        StatusCode::OK => Ok((send, response.into_body())),
        status => Err(Error::Status(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_headers() {
        let mut req = ConnectRequest::new("10.0.0.5:8080".parse().unwrap());
        req.forwarded_for = Some("10.0.1.7:41234".parse().unwrap());
        req.baggage = Some("k8s.namespace.name=shop".into());
        req.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let http = req.to_http();
        assert_eq!(http.method(), Method::CONNECT);
        assert_eq!(http.uri().to_string(), "10.0.0.5:8080");
        assert_eq!(http.uri().scheme(), None);
        assert_eq!(http.headers()["forwarded"], "for=\"10.0.1.7:41234\"");
        assert_eq!(http.headers()["baggage"], "k8s.namespace.name=shop");
        assert!(http.headers().contains_key("traceparent"));
        for (client, header) in [
            ("10.0.1.7:0", "for=10.0.1.7"),
            ("[fd00::7]:0", "for=\"[fd00::7]\""),
            ("[fd00::7]:80", "for=\"[fd00::7]:80\""),
        ] {
            req.forwarded_for = Some(client.parse().unwrap());
            assert_eq!(req.to_http().headers()["forwarded"], header);
        }

        let v6 = ConnectRequest::new("[fd00::5]:80".parse().unwrap()).to_http();
        assert_eq!(v6.uri().authority().unwrap().as_str(), "[fd00::5]:80");
    }

    #[tokio::test]
    async fn socket_factory_makes_the_dialed_socket() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let factory = SocketFactory::new(move |peer| {
            assert_eq!(peer, addr);
            seen.fetch_add(1, Ordering::SeqCst);
            let socket = TcpSocket::new_v4()?;
            // An option the default path never sets, to prove this socket was used.
            socket.set_nodelay(true)?;
            Ok(socket)
        });
        let stream = connect_tcp(addr, Some("127.0.0.1".parse().unwrap()), Some(&factory))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.local_addr().unwrap().ip(), addr.ip());

        let plain = connect_tcp(addr, None, None).await.unwrap();
        assert!(!plain.nodelay().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn socket_factory_errors_reach_the_caller() {
        let factory = SocketFactory::new(|_| Err(io::Error::other("no namespace")));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(connect_tcp(
                "127.0.0.1:1".parse().unwrap(),
                None,
                Some(&factory),
            ))
            .unwrap_err();
        assert_eq!(err.to_string(), "no namespace");
        assert_eq!(format!("{factory:?}"), "SocketFactory(..)");
    }
}
