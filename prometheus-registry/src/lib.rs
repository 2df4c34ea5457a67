//! The metrics library of every mesh component: series keyed by label set with a bound on
//! their number ([`Registry`]), counters and histograms kept in atomics ([`Histogram`]), and
//! the Prometheus text exposition format ([`text`]), and reading it back ([`scrape`]).
//!
//! Each component owns its registries (a proxy per instance, so several proxies in one process
//! report apart) and renders them in its own `/metrics` handler: there is no process-wide
//! recorder and no exporter thread. A label set is rendered once, when its series is created,
//! so the hot path is one map lookup and a few relaxed atomic additions, and a scrape copies
//! ready text.

mod histogram;
pub mod scrape;
mod series;
pub mod text;

pub use histogram::Histogram;
pub use series::{MAX_SERIES, Registry, Series, samples};
