//! Connections the proxy's limits closed or refused, per listener and reason: the
//! exposition of [`hbone::LimitCounters`] under the proxy's own prefix
//! (`ztunnel_connections_closed_total{listener="hbone",reason="idle"}`, ...).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use hbone::{Limit, LimitCounters};

use prometheus_registry::text;

/// The counters of each listener kind of one proxy (a handful, named in code).
#[derive(Default)]
pub(crate) struct Listeners(Mutex<Vec<(&'static str, Arc<LimitCounters>)>>);

impl Listeners {
    /// The counters of `listener`, created on first use.
    pub(crate) fn get(&self, listener: &'static str) -> Arc<LimitCounters> {
        let mut listeners = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counters)) = listeners.iter().find(|(name, _)| *name == listener) {
            return counters.clone();
        }
        let counters = LimitCounters::new();
        listeners.push((listener, counters.clone()));
        counters
    }

    /// Writes `<prefix>_connections_closed_total` and `<prefix>_connections_refused_total`,
    /// every reason of every listener, zeros included (a fixed set of series).
    pub(crate) fn render(&self, out: &mut String, prefix: &str) {
        let listeners = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let families = [
            (
                "closed",
                "Connections closed by a limit: a handshake or header deadline, idleness, \
                 a header bound, HTTP/2 abuse.",
                false,
            ),
            (
                "refused",
                "Connections refused at accept: the source address held its maximum.",
                true,
            ),
        ];
        for (verb, help, refusals) in families {
            let name = format!("{prefix}_connections_{verb}_total");
            text::family(out, &name, help, "counter");
            for (listener, counters) in &listeners {
                for limit in Limit::ALL
                    .into_iter()
                    .filter(|l| l.is_refusal() == refusals)
                {
                    let labels = text::render_labels(&[
                        ("listener", listener, ""),
                        ("reason", limit.as_str(), ""),
                    ]);
                    let _ = writeln!(out, "{name}{labels} {}", counters.get(limit));
                }
            }
        }
    }
}
