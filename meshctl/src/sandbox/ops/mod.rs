//! A sandbox held under its lock and what changes it: applying, deleting
//! and labelling objects, reconciling pods with them, the system components
//! (controller, ztunnels, node agents) and their tokens, waypoints, and what
//! the controller makes of applied objects.
//!
//! Imports the model, the host and the shared modules, never `cli`.
//! Inside, `sandbox` (the [`sandbox::Sandbox`] type: opening, storing
//! objects, syncing) is at the bottom; `tokens` and `findings` import
//! nothing of `ops`; `waypoints` builds on `sandbox` and `tokens`, `pods`
//! on `waypoints`, `apply` on `pods`, `system` on `sandbox` and
//! `tokens`, `proxies` on `sandbox`, `check` on `sandbox`, `system` and `findings`; `preflight` on nothing of it; and
//! `scrape` and `tap` on `proxies`, `stat` and `routes` on `scrape`. The methods each adds to `Sandbox` call only methods of the
//! modules below it.

pub(crate) mod apply;
pub(crate) mod check;
pub(crate) mod findings;
pub(crate) mod pods;
pub(crate) mod preflight;
pub(crate) mod proxies;
pub(crate) mod routes;
pub(crate) mod sandbox;
pub(crate) mod scrape;
pub(crate) mod stat;
pub(crate) mod system;
pub(crate) mod tap;
pub(crate) mod tokens;
pub(crate) mod waypoints;
