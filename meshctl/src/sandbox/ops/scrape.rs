//! Two scrapes of every proxy's `/metrics`, a window apart, and what each counter grew by
//! in between: what `stat`, `edges` and `routes` compute their rows from. Nothing here holds
//! the sandbox's lock: the proxies are found before the window starts.

use std::time::{Duration, Instant};

use prometheus_registry::scrape::{self, Sample};

use super::proxies::{self, Proxy};
use crate::sandbox::model::stat::increase;

/// What two scrapes of every proxy, a window apart, found.
pub struct Window {
    /// What every counter grew by (every proxy's, concatenated).
    pub increase: Vec<Sample>,
    /// The samples of the second scrapes.
    pub now: Vec<Sample>,
    /// Seconds between the two scrapes.
    pub seconds: f64,
    /// Proxies whose metrics could not be read, with why.
    pub unreachable: Vec<String>,
}

/// Scrapes `proxies`, waits `window`, scrapes them again.
pub fn scrape_window(proxies: &[Proxy], window: Duration, started: impl FnOnce(usize)) -> Window {
    let first = scrape_all(proxies);
    let begun = Instant::now();
    started(proxies.len());
    std::thread::sleep(window);
    let second = scrape_all(proxies);
    let seconds = begun.elapsed().as_secs_f64();
    let mut increase_all = Vec::new();
    let mut now = Vec::new();
    let mut unreachable = Vec::new();
    for ((proxy, before), after) in proxies.iter().zip(first).zip(second) {
        match (before, after) {
            (Ok(before), Ok(after)) => {
                increase_all.extend(increase(&before, &after));
                now.extend(after);
            }
            (Err(e), _) | (_, Err(e)) => unreachable.push(format!("{}: {e}", proxy.name)),
        }
    }
    Window {
        increase: increase_all,
        now,
        seconds,
        unreachable,
    }
}

/// Each proxy's samples, or why they could not be read.
fn scrape_all(proxies: &[Proxy]) -> Vec<std::result::Result<Vec<Sample>, String>> {
    proxies
        .iter()
        .map(|proxy| {
            let text = proxies::get(proxy, proxies::METRICS_PORT, "/metrics")?;
            Ok(scrape::parse(&text))
        })
        .collect()
}
