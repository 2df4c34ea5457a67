//! The `forwarded` header (RFC 7239) of a CONNECT: how a waypoint tells the destination's
//! ztunnel who the original client was. Only the `for` parameter is used.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// The header's value for `client`: `for="ip:port"`, or only the IP when the port is 0
/// (unknown); IPv6 and ports are quoted, as section 6 of the RFC requires.
pub fn header_value(client: SocketAddr) -> String {
    match (client.port(), client.ip()) {
        (0, IpAddr::V4(ip)) => format!("for={ip}"),
        (0, IpAddr::V6(ip)) => format!("for=\"[{ip}]\""),
        _ => format!("for=\"{client}\""),
    }
}

/// The client named by the last `for` of the header (the one added by the hop that sent
/// it), as `ip:port` (port 0 when only an IP is given), IPv4-mapped addresses made IPv4.
/// `None` without the header or for obfuscated/unknown nodes.
pub fn client(headers: &HeaderMap) -> Option<SocketAddr> {
    let value = headers.get(http::header::FORWARDED)?.to_str().ok()?;
    let last = value.rsplit(',').next()?;
    let node = last.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let node = node.trim_matches('"');
    let addr = match node.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let ip = node.trim_start_matches('[').trim_end_matches(']');
            SocketAddr::new(ip.parse().ok()?, 0)
        }
    };
    Some(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Option<SocketAddr> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::FORWARDED, value.parse().unwrap());
        client(&headers)
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn reads_every_form_of_for() {
        assert_eq!(parsed("for=\"10.0.1.7:41234\""), addr("10.0.1.7:41234"));
        assert_eq!(parsed("for=10.0.1.7"), addr("10.0.1.7:0"));
        assert_eq!(
            parsed("for=10.9.9.9, proto=http;For=\"[fd00::7]:80\""),
            addr("[fd00::7]:80")
        );
        assert_eq!(parsed("for=\"[fd00::8]\""), addr("[fd00::8]:0"));
        assert_eq!(parsed("for=\"[::ffff:10.0.0.1]:5\""), addr("10.0.0.1:5"));
        assert_eq!(parsed("for=unknown"), None);
        assert_eq!(parsed("for=_hidden"), None);
        assert_eq!(parsed("by=10.0.0.1"), None);
        assert_eq!(client(&HeaderMap::new()), None);
    }

    #[test]
    fn what_is_written_is_read_back() {
        for client_addr in [
            "10.0.1.7:41234",
            "10.0.1.7:0",
            "[fd00::7]:0",
            "[fd00::7]:80",
        ] {
            let sent: SocketAddr = client_addr.parse().unwrap();
            let mut headers = HeaderMap::new();
            headers.insert(http::header::FORWARDED, header_value(sent).parse().unwrap());
            assert_eq!(client(&headers), Some(sent), "{}", header_value(sent));
        }
        assert_eq!(header_value("10.0.1.7:0".parse().unwrap()), "for=10.0.1.7");
    }
}
