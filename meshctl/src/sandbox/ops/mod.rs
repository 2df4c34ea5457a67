//! A sandbox held under its lock and what changes it: applying, deleting
//! and labelling objects, reconciling pods with them, the system components
//! (controller, ztunnels, node agents) and their tokens, waypoints, and what
//! the controller makes of applied objects.

pub(crate) mod apply;
pub(crate) mod findings;
pub(crate) mod pods;
pub(crate) mod sandbox;
pub(crate) mod system;
pub(crate) mod tokens;
pub(crate) mod waypoints;
