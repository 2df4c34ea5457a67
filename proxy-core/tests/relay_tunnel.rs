//! The relay between plain TCP and real HBONE tunnels, both ways, as a ztunnel runs it:
//! outbound (TCP → tunnel, where reads are handed to HTTP/2 without a copy) and inbound
//! (tunnel → TCP, where received frames are written out as they are).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hbone::{
    Authority, ConnectHandler, ConnectRequest, Identity, IncomingConnect, Pool, Server, Upstream,
    WorkloadCertificate,
};
use proxy_core::connections::{LiveConnections, Relayed, relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TTL: Duration = Duration::from_secs(3600);

fn identity(sa: &str) -> Identity {
    Identity::new("cluster.local", "shop", sa).expect("identity")
}

/// The inbound side: relays each tunnel to its authority and reports how the relay ended.
struct Inbound {
    relayed: mpsc::UnboundedSender<Relayed>,
}

impl ConnectHandler for Inbound {
    async fn handle(&self, connect: IncomingConnect) {
        let app = TcpStream::connect(connect.authority)
            .await
            .expect("the app");
        let tunnel = connect.accept().expect("accepted");
        let registry = LiveConnections::new();
        let tracked = registry.register(None);
        let _ = self.relayed.send(relay(tunnel, app, &tracked).await);
    }
}

/// An app that answers every byte it reads with that byte plus one, and after the client's
/// half-close, the count it read: proof that bytes and the end of stream crossed intact.
async fn shifting_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 100_003];
        let mut total = 0usize;
        loop {
            let n = conn.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n;
            buf[..n].iter_mut().for_each(|b| *b = b.wrapping_add(1));
            conn.write_all(&buf[..n]).await.expect("write");
        }
        conn.write_all(format!("<{total}>").as_bytes())
            .await
            .expect("trailer");
        conn.shutdown().await.expect("shutdown");
    });
    addr
}

/// The byte at `i` of the stream the client sends (period 251: never aligned to a buffer).
fn sent_byte(i: usize) -> u8 {
    (i % 251) as u8
}

#[tokio::test]
async fn bytes_and_half_closes_cross_both_relays_intact() {
    let ca = Authority::generate_root("cluster.local", TTL).expect("root");
    let client_cert: Arc<WorkloadCertificate> =
        Arc::new(ca.issue(&identity("frontend"), TTL).expect("client cert"));
    let server_cert = ca.issue(&identity("orders"), TTL).expect("server cert");

    let (relayed_in, mut inbound_done) = mpsc::unbounded_channel();
    let tls = Arc::new(hbone::tls::server_config(&server_cert).expect("server config"));
    let (server, _tls) = Server::new(
        tls,
        Inbound {
            relayed: relayed_in,
        },
        TTL,
    );
    let hbone_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hbone_addr = hbone_listener.local_addr().expect("addr");
    tokio::spawn(server.run(hbone_listener, std::future::pending()));
    let app = shifting_echo().await;

    // The outbound side: the client's connection relayed into a tunnel to the app.
    let outbound_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let outbound_addr = outbound_listener.local_addr().expect("addr");
    let outbound = tokio::spawn(async move {
        let (client, _) = outbound_listener.accept().await.expect("accept");
        let upstream = Upstream {
            address: hbone_addr,
            identities: vec![identity("orders")],
            source_ip: None,
        };
        let tunnel = Pool::default()
            .connect(&client_cert, &upstream, &ConnectRequest::new(app))
            .await
            .expect("tunnel");
        let registry = LiveConnections::new();
        let tracked = registry.register(None);
        relay(client, tunnel, &tracked).await
    });

    // Small writes first (the relay's smallest reads), then bulk (its largest).
    let total = 12 * 1024 * 1024 + 7;
    let stream: Vec<u8> = (0..total).map(sent_byte).collect();
    let client = TcpStream::connect(outbound_addr).await.expect("connect");
    let (mut reader, mut writer) = client.into_split();
    let send = tokio::spawn(async move {
        for piece in stream[..4096].chunks(13) {
            writer.write_all(piece).await.expect("small write");
        }
        writer.write_all(&stream[4096..]).await.expect("bulk write");
        writer.shutdown().await.expect("half-close");
    });
    let mut back = Vec::with_capacity(total + 16);
    reader.read_to_end(&mut back).await.expect("read back");
    send.await.expect("sender");

    let (echoed, trailer) = back.split_at(total);
    let first_wrong = echoed
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != sent_byte(i).wrapping_add(1));
    assert_eq!(first_wrong, None, "every byte came back, in order");
    assert_eq!(trailer, format!("<{total}>").as_bytes());

    let outbound = outbound.await.expect("outbound relay");
    let inbound = inbound_done.recv().await.expect("inbound relay");
    for (side, relayed) in [("outbound", &outbound), ("inbound", &inbound)] {
        assert!(relayed.error.is_none(), "{side}: {relayed:?}");
        assert_eq!(relayed.sent, total as u64, "{side}");
        assert_eq!(relayed.received, back.len() as u64, "{side}");
    }
}
