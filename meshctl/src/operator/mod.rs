//! The operator's view of a mesh, the same whichever cluster it looks at (the sandbox or
//! Kubernetes): `check`'s checks and report, what the controller finds in objects and how
//! `analyze` prints it, `proxy-status`' model and table, `stat`'s, `edges`' and `routes`'
//! figures from two scrapes of the proxies' metrics (or from Prometheus), the tables, and the
//! `-o` flag. Pure:
//! each mode gathers the facts and hands them here.
//!
//! `ca` formats a root rotation's status.
//!
//! Imports only the sandbox's object model (`sandbox::model`); the one module of it that
//! imports this (`sandbox::model::stat`) is not imported here. Inside: `table`, `format`,
//! `stat` and `findings` at the bottom; `routes` and `promql` (on `stat`; `stat --prometheus`'s
//! queries and the rows from their answers), `check` (on `findings`) and
//! `proxy_status` (on `table` and `dump_certificates`, which reads proxies' certificate
//! entries whichever proxy wrote them); `window` (on `stat` and `routes`); `traffic` (on `window`,
//! `stat` and `table`).

pub mod ca;
pub mod check;
pub mod dump_certificates;
pub mod findings;
pub mod format;
pub mod promql;
pub mod proxy_status;
pub mod routes;
pub mod stat;
pub mod table;
pub mod traffic;
pub mod window;
