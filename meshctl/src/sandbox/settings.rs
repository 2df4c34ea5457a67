//! Which sandbox a verb acts on and where its files are: the name (the
//! prefix of every namespace it creates), the state folder and the folder of
//! the binaries.

use std::path::PathBuf;

use super::error::{Result, SandboxError};

/// Default sandbox name.
pub const DEFAULT_SANDBOX: &str = "default";
/// Where per-sandbox state folders live unless `--state-dir` says otherwise.
pub const STATE_ROOT: &str = "/run/meshctl";

/// Which sandbox a verb acts on, and where things are.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Sandbox name (prefix of every namespace it creates).
    pub name: String,
    /// The sandbox's state folder.
    pub state_dir: PathBuf,
    /// Folder holding `meshctl`, `controller`, `ztunnel` and `waypoint`,
    /// put first in every container's PATH.
    pub bin_dir: PathBuf,
}

impl SandboxSettings {
    /// Builds a config, checking the name and defaulting the folders.
    pub fn new(
        name: &str,
        state_dir: Option<PathBuf>,
        bin_dir: Option<PathBuf>,
    ) -> Result<SandboxSettings> {
        validate_sandbox_name(name)?;
        let state_dir = state_dir.unwrap_or_else(|| PathBuf::from(STATE_ROOT).join(name));
        let bin_dir = match bin_dir {
            Some(d) => d,
            None => std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.to_path_buf()))
                .unwrap_or_else(|| PathBuf::from("/usr/local/bin")),
        };
        Ok(SandboxSettings {
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
