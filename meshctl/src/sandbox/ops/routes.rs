//! `meshctl routes svc/NAME`: scrape every proxy's `/metrics` twice, a window apart (as
//! `stat` does), and compute each route of the service from the waypoints' per-route
//! metrics with [`crate::operator::routes`]. The sandbox's lock is held only to find
//! the proxies and the service.

use std::time::Duration;

use super::proxies;
use super::sandbox::Sandbox;
use super::scrape::scrape_window;
use crate::operator::window::MeasuredRoutes;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::services::services;
use crate::sandbox::settings::SandboxSettings;

/// Measures the routes of service `name` in `namespace` over `window`; `started` is called
/// once the first scrape is done and the window runs. An error when there is no such
/// service.
pub fn measure(
    cfg: &SandboxSettings,
    namespace: &str,
    name: &str,
    window: Duration,
    started: impl FnOnce(usize),
) -> Result<MeasuredRoutes> {
    let proxies = {
        let sb = Sandbox::open(cfg)?;
        if !services(&sb.cluster)
            .iter()
            .any(|s| s.namespace == namespace && s.name == name)
        {
            return Err(SandboxError::Invalid(format!(
                "service {namespace}/{name} not found"
            )));
        }
        proxies::all(&sb)
    };
    let window = scrape_window(&proxies, window, started);
    Ok(MeasuredRoutes::of(namespace, name, window))
}
