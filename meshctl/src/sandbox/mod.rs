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
    ($($t:tt)*) => { $crate::sandbox::output::say(format!($($t)*)) };
}

mod admin;
pub mod cli;
mod cluster;
mod container;
pub mod control;
mod dns;
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

use std::path::PathBuf;

pub use container::command_pid;
pub use manifest::ManifestError;

/// Default sandbox name.
pub const DEFAULT_SANDBOX: &str = "default";
/// Where per-sandbox state folders live unless `--state-dir` says otherwise.
pub const STATE_ROOT: &str = "/run/meshctl";

/// Errors of the sandbox verbs.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A manifest could not be read or is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The sandbox needs root for namespaces, veths and iptables.
    #[error(
        "the sandbox needs root (it creates network namespaces and iptables rules): run `sudo meshctl ...`"
    )]
    NotRoot,
    /// A required tool is not installed.
    #[error(
        "`{tool}` not found in PATH: install the Debian package `{package}` (apt-get install -y {package})"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// The package that provides it.
        package: &'static str,
    },
    /// An external command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output (or exit status).
        stderr: String,
    },
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The sandbox does not exist.
    #[error("sandbox {0:?} is not up (start it with `meshctl up [FOLDER]`)")]
    NotUp(String),
    /// `up` on a sandbox that exists.
    #[error(
        "sandbox {0:?} is already up: use `meshctl apply -f ...` to change it, or `meshctl down` first"
    )]
    AlreadyUp(String),
    /// A system component did not come up.
    #[error("the {what} did not become ready: {why}\nlast lines of {log}:\n{tail}")]
    NotReady {
        /// The component.
        what: String,
        /// What was observed.
        why: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// Anything the user asked for that cannot be done.
    #[error("{0}")]
    Invalid(String),
    /// The state folder is unreadable.
    #[error("state {path}: {message}")]
    State {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl SandboxError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
        let context = context.into();
        move |source| SandboxError::Io { context, source }
    }
}

/// Result alias for the sandbox.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;

/// Which sandbox a verb acts on, and where things are.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sandbox name (prefix of every namespace it creates).
    pub name: String,
    /// The sandbox's state folder.
    pub state_dir: PathBuf,
    /// Folder holding `meshctl`, `controller`, `ztunnel` and `waypoint`,
    /// put first in every container's PATH.
    pub bin_dir: PathBuf,
}

impl Config {
    /// Builds a config, checking the name and defaulting the folders.
    pub fn new(name: &str, state_dir: Option<PathBuf>, bin_dir: Option<PathBuf>) -> Result<Config> {
        validate_sandbox_name(name)?;
        let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(STATE_ROOT).join(name));
        let bin_dir = match bin_dir {
            Some(d) => d,
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.to_path_buf()))
                .unwrap_or_else(|| PathBuf::from("/usr/local/bin")),
        };
        Ok(Config {
            name: name.to_string(),
            state_dir,
            bin_dir,
        })
    }
}

/// Sandbox names become part of namespace names: short, lower case, no dots.
pub fn validate_sandbox_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::Invalid(format!(
            "invalid sandbox name {name:?}: use 1-24 characters a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names() {
        assert!(validate_sandbox_name("default").is_ok());
        assert!(validate_sandbox_name("e2e-123-4").is_ok());
        assert!(validate_sandbox_name("a.b").is_err());
        assert!(validate_sandbox_name("").is_err());
        assert!(validate_sandbox_name(&"x".repeat(25)).is_err());
    }
}
