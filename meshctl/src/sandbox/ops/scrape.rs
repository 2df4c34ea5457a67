//! Two scrapes of every proxy's `/metrics`, a window apart: what `stat`, `edges` and
//! `routes` compute their rows from ([`crate::operator::window`]). Nothing here holds the
//! sandbox's lock: the proxies are found before the window starts.

use std::time::{Duration, Instant};

use prometheus_registry::scrape;

use super::proxies::{self, Proxy};
use crate::operator::window::{Scraped, Window};

/// Scrapes `proxies`, waits `window`, scrapes them again.
pub fn scrape_window(proxies: &[Proxy], window: Duration, started: impl FnOnce(usize)) -> Window {
    let first = scrape_all(proxies);
    let begun = Instant::now();
    started(proxies.len());
    std::thread::sleep(window);
    let second = scrape_all(proxies);
    let seconds = begun.elapsed().as_secs_f64();
    let names: Vec<String> = proxies.iter().map(|p| p.name.clone()).collect();
    Window::of(&names, first, second, seconds)
}

/// Each proxy's samples, or why they could not be read (the dashboard keeps its own
/// rolling window of these).
pub fn scrape_all(proxies: &[Proxy]) -> Vec<Scraped> {
    proxies
        .iter()
        .map(|proxy| {
            let text = proxies::get(proxy, proxies::METRICS_PORT, "/metrics")?;
            Ok(scrape::parse(&text))
        })
        .collect()
}
