//! L4 authorization as Istio evaluates it: any matching DENY denies; otherwise, if ALLOW
//! policies apply to the workload, one must match; otherwise the connection is allowed.

use std::net::IpAddr;

use hbone::Identity;

use super::Workload;

/// A connection to be authorized at its destination.
#[derive(Debug)]
pub struct AuthzRequest<'a> {
    /// The verified peer identity (None for plaintext).
    pub source_identity: Option<&'a Identity>,
    /// The original client IP.
    pub source_ip: IpAddr,
    /// The local workload being connected to.
    pub destination: &'a Workload,
    /// The destination port on that workload.
    pub destination_port: u16,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied, naming the policy (or the absence of a matching ALLOW).
    Deny(String),
}
