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

/// Refuses a `window` shorter than `refresh`: figures are measured between two refreshes'
/// scrapes, so a shorter window could not be honoured.
pub fn window_covers_refresh(refresh: Duration, window: Duration) -> Result<(), String> {
    if window < refresh {
        return Err(format!(
            "--window {window:?} is shorter than --refresh {refresh:?}: figures are measured \
             between two refreshes' scrapes; lengthen --window or shorten --refresh"
        ));
    }
    Ok(())
}

/// Whether a request naming `host` (its Host header) may be answered by a dashboard listening
/// on `port`: on loopback only requests for a loopback name, so that a web page the browser
/// loaded from elsewhere cannot read the dashboard by pointing its own domain name at
/// 127.0.0.1 (DNS rebinding); any host with `allow_remote`.
pub fn host_allowed(host: Option<&str>, port: u16, allow_remote: bool) -> bool {
    if allow_remote {
        return true;
    }
    let Some(host) = host else {
        return false;
    };
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|name| host.eq_ignore_ascii_case(&format!("{name}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_shorter_than_the_refresh_is_refused() {
        let s = Duration::from_secs;
        assert!(window_covers_refresh(s(5), s(30)).is_ok());
        assert!(window_covers_refresh(s(5), s(5)).is_ok());
        let err = window_covers_refresh(s(5), s(2)).unwrap_err();
        assert!(
            err.starts_with("--window 2s is shorter than --refresh 5s"),
            "{err}"
        );
    }

    #[test]
    fn only_loopback_names_reach_a_loopback_dashboard() {
        assert!(host_allowed(Some("127.0.0.1:50750"), 50750, false));
        assert!(host_allowed(Some("LOCALHOST:50750"), 50750, false));
        assert!(host_allowed(Some("[::1]:50750"), 50750, false));
        assert!(!host_allowed(Some("evil.example:50750"), 50750, false));
        assert!(!host_allowed(Some("127.0.0.1:80"), 50750, false));
        assert!(!host_allowed(None, 50750, false));
        assert!(host_allowed(Some("mesh.example:50750"), 50750, true));
    }

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
