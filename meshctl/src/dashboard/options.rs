//! How the dashboard is started, and whether its address may be used.

use std::net::SocketAddr;
use std::time::Duration;

/// How `meshctl dashboard` runs, from its flags.
#[derive(Clone, Debug)]
pub struct DashboardOptions {
    /// Where to listen.
    pub address: SocketAddr,
    /// Whether an address other than loopback is allowed.
    pub allow_remote: bool,
    /// Whether to try to open a browser on the URL.
    pub open_browser: bool,
    /// Time between two refreshes of the metrics, graph and checks.
    pub refresh: Duration,
    /// What rates, success and latency are measured over.
    pub window: Duration,
}

/// Whether the dashboard may listen on `address`: loopback always; any other address only
/// with `allow_remote`, and then with a warning to print (the dashboard has no
/// authentication, and shows every workload, identity and request path).
pub fn exposure(address: SocketAddr, allow_remote: bool) -> Result<Option<String>, String> {
    if address.ip().is_loopback() {
        return Ok(None);
    }
    if !allow_remote {
        return Err(format!(
            "{address} is not a loopback address: anyone who reaches it would see the mesh's \
             workloads, identities and live requests; pass --allow-remote to listen there \
             anyway"
        ));
    }
    Ok(Some(format!(
        "warning: listening on {address}: the dashboard has no authentication, anyone who \
         reaches this address sees the mesh"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_allowed_anything_else_needs_the_flag_and_warns() {
        let local: SocketAddr = "127.0.0.1:50750".parse().unwrap();
        let local6: SocketAddr = "[::1]:50750".parse().unwrap();
        let remote: SocketAddr = "0.0.0.0:50750".parse().unwrap();
        assert_eq!(exposure(local, false), Ok(None));
        assert_eq!(exposure(local6, false), Ok(None));
        let refused = exposure(remote, false).unwrap_err();
        assert!(refused.contains("--allow-remote"), "{refused}");
        let warning = exposure(remote, true).unwrap().unwrap();
        assert!(
            warning.starts_with("warning: listening on 0.0.0.0:50750"),
            "{warning}"
        );
    }
}
