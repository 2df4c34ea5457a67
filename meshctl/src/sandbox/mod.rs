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

pub mod cli;
pub mod config;
mod console;
pub mod error;
pub mod host;
pub mod model;
pub(crate) mod ops;

pub use config::STATE_ROOT;
pub use host::procfs::command_pid;
