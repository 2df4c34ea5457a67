//! The operator's view of a mesh, the same whichever cluster it looks at (the sandbox or
//! Kubernetes): `check`'s checks and report, what the controller finds in objects and how
//! `analyze` prints it, `proxy-status`' model and table, the tables, and the `-o` flag. Pure:
//! each mode gathers the facts and hands them here.
//!
//! Imports only the sandbox's object model (`sandbox::model`), which imports nothing of it.
//! Inside: `table` and `format` at the bottom, `findings`, then `check` (on `findings`) and
//! `proxy_status` (on `table`).

pub mod check;
pub mod findings;
pub mod format;
pub mod proxy_status;
pub mod table;
