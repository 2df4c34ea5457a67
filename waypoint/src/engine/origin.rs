//! Where a request comes from and where it was going, as the transport learned them from the
//! tunnel it arrived on. Every stage of the engine reads them; they depend on nothing else in
//! the engine.

use std::net::{IpAddr, SocketAddr};

/// Who sent a request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Verified identity of the original client (from the HBONE peer), if any.
    pub identity: Option<hbone::Identity>,
    /// Original client IP.
    pub ip: IpAddr,
}

/// Where a request was addressed.
#[derive(Clone, Debug)]
pub struct Target {
    /// The original destination (`:authority` of the HBONE CONNECT): a service VIP and port.
    pub address: SocketAddr,
}
