//! The proxy's own ports inside each pod.

use std::net::SocketAddr;

/// Outbound capture port (the pod's connections are REDIRECTed here).
pub const OUTBOUND_PORT: u16 = 15001;
/// Inbound plaintext port (TPROXY delivers connections to the pod here).
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Inbound HBONE port.
pub const INBOUND_HBONE_PORT: u16 = hbone::HBONE_PORT;

/// Ports of the proxy itself: a connection asking for one of them would loop back into the
/// proxy, so it is refused (Istio's "illegal ports").
const OWN_PORTS: [u16; 3] = [OUTBOUND_PORT, INBOUND_PLAINTEXT_PORT, INBOUND_HBONE_PORT];

/// Whether `destination` is one of this proxy's own listeners.
pub(crate) fn is_own_port(destination: SocketAddr) -> bool {
    OWN_PORTS.contains(&destination.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_ports_are_known() {
        assert!(is_own_port("10.0.0.1:15008".parse().unwrap()));
        assert!(!is_own_port("10.0.0.1:8080".parse().unwrap()));
    }
}
