//! What a client may hold on the waypoint: HTTP/2 connections inside tunnels whose header
//! block never ends are closed at the waypoint's header deadline, counted, and leave the
//! waypoint's memory where it was.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use e2e::measure::rss_mib;
use e2e::mesh::in_netns;
use e2e::metrics::metric_sum;
use e2e::{SETTLE, Sandbox, eventually};

use crate::shop::{self, NS, waypoint_metrics};

/// Connections held in one round.
const HELD: usize = 100;
/// The orders Service's port (declared `http`, so the waypoint serves HTTP in its tunnels).
const ORDERS_PORT: u16 = 8080;

/// The HTTP/2 client preface, an empty SETTINGS frame, then a HEADERS frame on stream 1
/// whose END_HEADERS flag is not set (one byte of header block: `:method: GET`), so the
/// header block stays open for ever unless the server ends it.
const OPEN_HEADER_BLOCK: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\
    \x00\x00\x00\x04\x00\x00\x00\x00\x00\
    \x00\x00\x01\x01\x00\x00\x00\x00\x01\x82";

/// The orders Service's cluster IP, from `meshctl get svc`.
fn orders_ip(sb: &Sandbox) -> Ipv4Addr {
    let args = ["get", "svc", "-n", NS].map(String::from);
    let out = sb.run(&args).expect("meshctl get svc");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some("orders"))
        .and_then(|line| line.split_whitespace().find_map(|f| f.parse().ok()))
        .unwrap_or_else(|| panic!("no cluster IP for orders in:\n{table}"))
}

/// `waypoint_connections_closed_total{listener="http",reason="header_timeout"}` (-1 unread).
fn closed_at_header_deadline(sb: &Sandbox) -> f64 {
    waypoint_metrics(sb).map_or(-1.0, |text| {
        let labels = [("listener", "http"), ("reason", "header_timeout")];
        metric_sum(&text, "waypoint_connections_closed_total", &labels)
    })
}

/// Opens [`HELD`] connections from the client pod (captured: they reach the waypoint through
/// the pod's ztunnel), each leaving a header block open; runs `meanwhile`; then waits until
/// every one is closed and counted. Returns `meanwhile`'s result.
fn round<T>(sb: &Sandbox, orders: SocketAddr, meanwhile: impl FnOnce() -> T) -> T {
    let before = closed_at_header_deadline(sb);
    let client = sb.netns_path(&format!("{NS}.client"));
    let mut held = in_netns(&client, || {
        (0..HELD)
            .map(|_| {
                let mut stream = TcpStream::connect_timeout(&orders, Duration::from_secs(5))?;
                stream.write_all(OPEN_HEADER_BLOCK)?;
                Ok(stream)
            })
            .collect::<std::io::Result<Vec<TcpStream>>>()
    })
    .expect("entering the client pod's namespace")
    .expect("connections to orders");
    let result = meanwhile();
    for stream in &mut held {
        wait_closed(stream);
    }
    assert!(
        eventually(SETTLE, || closed_at_header_deadline(sb)
            >= before + HELD as f64),
        "the waypoint counts every connection it closed at the header deadline"
    );
    result
}

/// Reads `stream` until the other end closes it (a reset counts).
fn wait_closed(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(SETTLE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

#[test]
fn http2_header_blocks_that_never_end_are_closed_counted_and_leave_the_waypoints_memory() {
    let sb = shop::up();
    let orders = SocketAddr::from((orders_ip(&sb), ORDERS_PORT));
    let pid = shop::waypoint_pid(&sb);
    let rss = || rss_mib(pid).expect("the waypoint's RSS");
    let rss_start = rss();
    let rss_first = round(&sb, orders, || {
        // Well-behaved requests are served meanwhile.
        shop::load(&sb, shop::CLIENT, shop::ORDERS, 20, &[]).count(200)
    });
    assert_eq!(
        rss_first, 20,
        "requests are served while connections are held"
    );
    // The allocator keeps what the first round freed for reuse: the baseline is taken once
    // it has been through the same load, so growth now would be a leak.
    let rss_before = rss();
    let rss_held = round(&sb, orders, rss);
    let mut rss_after = rss_held;
    let returned = eventually(SETTLE, || {
        rss_after = rss();
        rss_after <= rss_before * 1.10
    });
    eprintln!(
        "waypoint RSS in MiB: {rss_start:.1} at start, {rss_before:.1} after a first round of \
         {HELD} held connections, {rss_held:.1} with {HELD} held again, {rss_after:.1} after"
    );
    assert!(returned, "memory returns to within 10% of before");
}
