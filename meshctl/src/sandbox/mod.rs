//! The sandbox: a Kubernetes-like cluster built from Linux network namespaces
//! on one machine.
//!
//! Everything lives inside namespaces the sandbox creates (a fabric namespace
//! with a bridge joining node namespaces; pod namespaces attached to their
//! node by routed veth pairs), so nothing is added to the host's network
//! namespace and sandboxes with identical addresses run side by side.
//! Teardown is: kill the processes in those namespaces, delete the
//! namespaces, remove `/etc/netns/<ns>` and the state folder.
//!
//! The code is layered; a module imports only from the layers below its own
//! and, inside its folder, from the modules its folder's doc lists before it:
//!
//! 1. [`model`]: the cluster as data (objects, validation, addresses, nodes
//!    and pods, planning, the system components' command lines). Imports no
//!    other part of the sandbox.
//! 2. [`error`], [`config`] and `console`: the error type (which wraps
//!    manifest errors), which sandbox a verb acts on, and terminal output.
//! 3. [`host`]: what the sandbox does to the machine (namespaces, iptables,
//!    hosts files, processes and containers, the state folder, teardown).
//! 4. `ops`: a sandbox held under its lock and what changes it (objects,
//!    pods, system components, waypoints, tokens).
//! 5. [`cli`]: the verbs and what they print.
//!
//! Folders declare their modules and re-export at most what the layer above
//! uses; they define nothing their own modules import, so no module is
//! both above and below another.

/// `println!` that never panics on a closed stdout.
macro_rules! say {
    ($($t:tt)*) => { $crate::sandbox::console::say(format!($($t)*)) };
}

pub mod cli;
mod console;
pub mod error;
pub mod host;
pub mod model;
pub(crate) mod ops;
pub mod settings;

pub use host::procfs::command_pid;
pub use settings::STATE_ROOT;
