//! The sandbox: a Kubernetes-like cluster built from Linux network namespaces
//! on one machine.
//!
//! Everything lives inside namespaces the sandbox creates (a fabric namespace
//! with a bridge joining node namespaces; pod namespaces attached to their
//! node by routed veth pairs), so nothing is added to the host's network
//! namespace and sandboxes with identical addresses run side by side.
//! Teardown is: kill the processes in those namespaces, delete the
//! namespaces, remove `/etc/netns/<ns>` and the state folder.

/// `println!` that never panics on a closed stdout.
macro_rules! say {
    ($($t:tt)*) => { $crate::sandbox::console::say(format!($($t)*)) };
}

pub mod addresses;
mod admin;
pub mod cli;
mod cluster;
pub mod config;
mod console;
mod container;
pub mod control;
mod dns;
pub mod error;
mod findings;
mod forward;
mod ids;
pub mod kubeproxy;
pub mod manifest;
pub mod model;
mod netns;
mod output;
mod process;
mod reaper;
pub mod security;
pub mod state;
mod system;
mod teardown;
mod tokens;
mod validate;
pub mod waypoints;

pub use config::STATE_ROOT;
pub use container::command_pid;
