//! What the sandbox's cluster is, as data: Kubernetes objects as applied,
//! their validation, the address plan, nodes and pods with their placement,
//! Services with their endpoints, what a process is started with, and the
//! system components' command lines and files. Nothing here starts a
//! process, touches a namespace or writes a file, so all of it is
//! unit-tested without root.
//!
//! Imports nothing else of the sandbox. Inside, from the bottom up: `ids` and
//! `objects`, and `ignored` and `probes` (on `objects`); `addresses`, `control` (on `ids`) and `security` (on
//! `objects`); `validate`; `manifest`; `cluster`; then `plan`, `env`,
//! `services` and `waypoints`, which import `cluster` and what is below it,
//! and `stat` (on `services`; the rows' figures are `crate::operator::stat`'s) and `tap`
//! (on `stat`); `proxy_config` and `top` import nothing of it.

pub mod addresses;
pub mod cluster;
pub mod control;
pub mod env;
pub mod ids;
pub mod ignored;
pub mod manifest;
pub mod objects;
pub mod plan;
pub mod probes;
pub mod proxy_config;
pub mod security;
pub mod services;
pub mod stat;
pub mod tap;
pub mod top;
pub(crate) mod validate;
pub mod waypoints;
