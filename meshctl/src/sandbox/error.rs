//! The sandbox's error type, shared by every layer that can fail in ways a
//! verb reports (manifests, host commands, the state folder).

use super::model::manifest::ManifestError;
use crate::operator::promql::PrometheusError;

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
    /// Prometheus (`stat --prometheus`) could not be asked, or refused a query.
    #[error(transparent)]
    Prometheus(#[from] PrometheusError),
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

    /// Maps a failed system call to the sandbox's error, saying what was done.
    pub fn sys(context: impl std::fmt::Display) -> impl FnOnce(nix::errno::Errno) -> SandboxError {
        let context = context.to_string();
        move |errno| SandboxError::Io {
            context,
            source: errno.into(),
        }
    }
}

/// Result alias for the sandbox.
pub type Result<T, E = SandboxError> = std::result::Result<T, E>;
