//! Sockets of the in-pod data path, created inside the pod's network namespace with the
//! options the istio-cni in-pod redirection contract expects.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, warn};

use super::netns::PodNetns;

/// Mark on every socket the proxy opens in a pod: the pod's iptables rules let packets with
/// this mark (under mask 0xfff) through instead of redirecting them back to the proxy.
pub const PROXY_MARK: u32 = 0x539;

/// Backlog of each listener: bounded, as the kernel's own cap would be.
const LISTEN_BACKLOG: i32 = 1024;

/// Binds a listener on `port` of every address of the pod, inside `netns`.
///
/// Like Istio's in-pod ztunnel it binds the IPv6 wildcard as a dual-stack socket (so IPv4
/// arrives as mapped addresses, see [`canonical`]), falling back to `0.0.0.0` where IPv6 is
/// unavailable. SO_REUSEPORT lets a new proxy bind beside an old one during a handover;
/// `transparent` (IP_TRANSPARENT) is needed where TPROXY delivers connections addressed to
/// other IPs and ports.
pub fn bind_listener(netns: &PodNetns, port: u16, transparent: bool) -> io::Result<TcpListener> {
    let socket = netns.run(|| {
        match listener_socket(
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            transparent,
        ) {
            Ok(socket) => Ok(socket),
            Err(e) if ipv6_unavailable(&e) => listener_socket(
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
                transparent,
            ),
            Err(e) => Err(e),
        }
    })?;
    TcpListener::from_std(socket.into())
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

fn listener_socket(addr: SocketAddr, transparent: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_mark(PROXY_MARK)?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if transparent {
        set_transparent(&socket, addr.is_ipv6())?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

fn set_transparent(socket: &Socket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        socket.set_ip_transparent_v6(true)
    } else {
        socket.set_ip_transparent_v4(true)
    }
}

/// Choices of source port tried for a connection from a client's address before the choice
/// is left to the kernel.
const SOURCE_PORT_TRIES: usize = 8;

/// A TCP socket inside `netns`, marked, ready to connect to `peer`.
///
/// With `source`, the socket is bound to that IP (port chosen by the kernel at connect) with
/// IP_TRANSPARENT and IP_FREEBIND, so the connection leaves from an address that is not the
/// pod's: the original client's. If that cannot be arranged the connection still goes ahead
/// from the pod's own address, as Istio does, with a warning.
pub fn upstream_socket(
    netns: &PodNetns,
    peer: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<TcpSocket> {
    let peer = canonical(peer);
    let source = impersonable(source, peer);
    let socket = netns.run(|| {
        let socket = new_socket(peer)?;
        if let Some(ip) = source
            && let Err(e) = bind_foreign(&socket, SocketAddr::new(ip, 0))
        {
            warn!(source = %ip, error = %e, "cannot connect from the client's address; using the pod's");
        }
        Ok(socket)
    })?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// `source` as an address a connection to `peer` can leave from: an IPv4 client can only be
/// impersonated towards an IPv4 peer.
fn impersonable(source: Option<IpAddr>, peer: SocketAddr) -> Option<IpAddr> {
    source
        .map(canonical_ip)
        .filter(|ip| ip.is_ipv4() == peer.is_ipv4())
}

fn new_socket(peer: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(PROXY_MARK)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Binds `socket` to `source`, an address not the pod's. Port 0 leaves the port to
/// `connect` (IP_BIND_ADDRESS_NO_PORT), which picks one free for the whole 4-tuple rather
/// than one free for the IP alone; a given port is shared (SO_REUSEADDR) with sockets of
/// other 4-tuples and with TIME_WAIT ones, and `connect` refuses it if the 4-tuple is taken.
fn bind_foreign(socket: &Socket, source: SocketAddr) -> io::Result<()> {
    if source.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    set_transparent(socket, source.is_ipv6())?;
    if source.port() == 0 {
        // An optimisation only: a kernel without the option still works.
        if let Err(e) = setsockopt(socket, sockopt::IpBindAddressNoPort, &true) {
            debug!(error = %e, "IP_BIND_ADDRESS_NO_PORT not set");
        }
    } else {
        socket.set_reuse_address(true)?;
    }
    socket.bind(&source.into())
}

/// Connects to `peer` from inside `netns` (see [`upstream_socket`]); from `source`, the
/// pod's source ports are taken in turn (see [`super::source_ports`]).
pub async fn connect(
    netns: &PodNetns,
    peer: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<TcpStream> {
    let peer = canonical(peer);
    let stream = match impersonable(source, peer) {
        Some(ip) => connect_from_client(netns, peer, ip).await?,
        None => upstream_socket(netns, peer, None)?.connect(peer).await?,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect_from_client(
    netns: &PodNetns,
    peer: SocketAddr,
    ip: IpAddr,
) -> io::Result<TcpStream> {
    let ports = netns.source_ports()?;
    for port in (0..SOURCE_PORT_TRIES).map_while(|_| ports.next_port()) {
        let bound = netns.run(|| {
            let socket = new_socket(peer)?;
            bind_foreign(&socket, SocketAddr::new(ip, port))?;
            Ok(socket)
        });
        let socket = match bound {
            Ok(socket) => TcpSocket::from_std_stream(socket.into()),
            // Held by a socket that does not share it (a listener of the app's, say).
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            // Impersonation itself failed: the kernel's way below reports it and falls back.
            Err(_) => break,
        };
        match socket.connect(peer).await {
            // The 4-tuple is taken (in TIME_WAIT, most often): the next port.
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => continue,
            result => return result,
        }
    }
    upstream_socket(netns, peer, Some(ip))?.connect(peer).await
}

/// The destination a REDIRECTed connection was addressed to (SO_ORIGINAL_DST), trying the
/// IPv4 option first: a dual-stack socket may carry either family.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = match sock.original_dst_v4() {
        Ok(addr) => addr,
        Err(v4) => sock.original_dst_v6().map_err(|_| v4)?,
    };
    addr.as_socket()
        .map(canonical)
        .ok_or_else(|| io::Error::other("original destination is not an IP address"))
}

/// `addr` with an IPv4-mapped IPv6 address turned back into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// `ip` with an IPv4-mapped IPv6 address turned back into IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::netns::tests::new_namespace;
    use std::process::Command;

    fn current() -> PodNetns {
        PodNetns::open(std::path::Path::new("/proc/thread-self/ns/net")).unwrap()
    }

    /// A fresh namespace with loopback up.
    fn namespace_with_loopback() -> PodNetns {
        let netns = PodNetns::new(new_namespace());
        netns
            .run(|| {
                let status = Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status()?;
                assert!(status.success());
                Ok(())
            })
            .unwrap();
        netns
    }

    #[test]
    fn canonical_unmaps_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(canonical(mapped), "10.0.0.1:80".parse().unwrap());
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[tokio::test]
    async fn listeners_carry_mark_reuseport_and_transparency() {
        let netns = namespace_with_loopback();
        let plain = bind_listener(&netns, 0, false).unwrap();
        let sock = SockRef::from(&plain);
        assert_eq!(sock.mark().unwrap(), PROXY_MARK);
        assert!(sock.reuse_port().unwrap());
        assert!(plain.local_addr().unwrap().ip().is_unspecified());

        let transparent = bind_listener(&netns, 0, true).unwrap();
        let sock = SockRef::from(&transparent);
        let on = if transparent.local_addr().unwrap().is_ipv6() {
            sock.ip_transparent_v6().unwrap()
        } else {
            sock.ip_transparent_v4().unwrap()
        };
        assert!(on);

        // A second proxy can bind the same port while the first still listens.
        let port = plain.local_addr().unwrap().port();
        let again = bind_listener(&netns, port, false).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), port);
    }

    #[tokio::test]
    async fn upstream_sockets_are_marked_and_connect_in_the_namespace() {
        let netns = namespace_with_loopback();
        let listener = bind_listener(&netns, 0, false).unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer: SocketAddr = ([127, 0, 0, 1], port).into();
        let (client, accepted) = tokio::join!(connect(&netns, peer, None), listener.accept());
        let client = client.unwrap();
        let (_server, from) = accepted.unwrap();
        assert_eq!(SockRef::from(&client).mark().unwrap(), PROXY_MARK);
        assert_eq!(canonical(from), client.local_addr().unwrap());
    }

    #[tokio::test]
    async fn upstream_sockets_can_leave_from_a_foreign_address() {
        let netns = namespace_with_loopback();
        let listener = bind_listener(&netns, 0, false).unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer: SocketAddr = ([127, 0, 0, 1], port).into();
        // 127.0.0.9 is no interface's address, yet loopback routes it back to us.
        let source: IpAddr = [127, 0, 0, 9].into();
        let (client, accepted) =
            tokio::join!(connect(&netns, peer, Some(source)), listener.accept());
        let client = client.unwrap();
        let (_server, from) = accepted.unwrap();
        assert_eq!(canonical(from).ip(), source);
        assert_eq!(client.local_addr().unwrap().ip(), source);
        let sock = SockRef::from(&client);
        assert!(sock.ip_transparent_v4().unwrap());
    }

    #[tokio::test]
    async fn connections_from_a_client_take_the_pods_ports_in_turn() {
        let netns = namespace_with_loopback();
        // Bound first, so that its own port is not one of the few the pod is given below.
        let listener = bind_listener(&netns, 0, false).unwrap();
        netns
            .run(|| {
                let set = |name: &str, value: &str| {
                    std::fs::write(format!("/proc/sys/net/ipv4/{name}"), value)
                };
                set("ip_local_port_range", "40000 40003")?;
                set("ip_local_reserved_ports", "40001")?;
                // Loopback would reuse TIME_WAIT 4-tuples (the default 2 means loopback only).
                set("tcp_tw_reuse", "0")
            })
            .unwrap();
        let peer: SocketAddr = ([127, 0, 0, 1], listener.local_addr().unwrap().port()).into();
        let source: IpAddr = [127, 0, 0, 9].into();
        let mut open = Vec::new();
        for _ in 0..3 {
            let (client, accepted) =
                tokio::join!(connect(&netns, peer, Some(source)), listener.accept());
            open.push((client.unwrap(), accepted.unwrap().0));
        }
        let ports: std::collections::BTreeSet<u16> = open
            .iter()
            .map(|(client, _)| client.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports, [40000, 40002, 40003].into());

        // Every port is in use towards this peer: each try is refused, the kernel finds none.
        let refused = connect(&netns, peer, Some(source)).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AddrNotAvailable);

        // The proxy's side closes first, as when a client hangs up: the 4-tuples linger in
        // TIME_WAIT, which the kernel lets an explicitly bound port take over (timestamps
        // guard it), so the pod's ports serve again at once.
        for (client, mut server) in open {
            drop(client);
            let mut rest = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut server, &mut rest)
                .await
                .unwrap();
        }
        let (again, _accepted) =
            tokio::join!(connect(&netns, peer, Some(source)), listener.accept());
        assert!(ports.contains(&again.unwrap().local_addr().unwrap().port()));
    }

    #[tokio::test]
    async fn the_current_namespace_works_too() {
        let listener = bind_listener(&current(), 0, false).unwrap();
        assert!(listener.local_addr().unwrap().port() > 0);
    }
}
