//! Where a root rotation stands, persisted in the CA folder before each step takes effect:
//! `rotation.json` (the phase, both roots' certificates, the deadlines) and
//! `next-root-key.pem` (the new root's key until it signs). [`repair`] runs before the CA is
//! loaded and rewrites `root-key.pem` / `root-cert.pem` to what the recorded phase says, so
//! a controller stopped between two writes resumes where it was.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::CaError;
use super::layout::{ROOT_CERT, ROOT_KEY};
use super::store::write_atomic;

/// The rotation's record.
pub const STATE: &str = "rotation.json";
/// The new root's key while the old root still signs.
pub const NEXT_KEY: &str = "next-root-key.pem";

/// The phases of a root rotation (numbered as the `controller_ca_rotation_phase` gauge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// 0: no rotation in progress.
    #[default]
    Idle,
    /// 1–2: the new root is published beside the old one, which still signs; waiting for
    /// every proxy to load that bundle.
    Published,
    /// 3: the new root signs and proxies renew ahead of schedule; waiting until no
    /// certificate from the old root can still be valid.
    Reissuing,
}

impl Phase {
    /// The gauge's value (2, "every proxy has the bundle", is a condition, not a phase).
    pub fn number(self) -> u64 {
        match self {
            Phase::Idle => 0,
            Phase::Published => 1,
            Phase::Reissuing => 3,
        }
    }
}

/// Everything a rotation must remember across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The current phase.
    pub phase: Phase,
    /// When it began, seconds since the epoch.
    pub since: u64,
    /// The root being replaced, PEM.
    pub old_root: String,
    /// The new root, PEM.
    pub new_root: String,
    /// Window in which proxies renew after the new root starts signing, milliseconds.
    pub reissue_within_ms: u64,
    /// The longest leaf lifetime the old root may have signed, seconds.
    pub longest_leaf_secs: u64,
    /// Phase 3: when the old root is dropped at the earliest, seconds since the epoch.
    pub drop_after: u64,
    /// When the last rotation completed, seconds since the epoch (0: never).
    pub completed_at: u64,
}

impl State {
    /// The reissue window.
    pub fn reissue_within(&self) -> Duration {
        Duration::from_millis(self.reissue_within_ms)
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The recorded state (the default, idle, when there is none).
pub fn load(dir: &Path) -> Result<State, CaError> {
    let path = dir.join(STATE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            CaError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(CaError::io(&path, e)),
    }
}

/// Records `state` (atomically; readers never see half of it).
pub fn save(dir: &Path, state: &State) -> Result<(), CaError> {
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    write_atomic(&dir.join(STATE), &text, 0o644)
}

/// The new root's key, kept until it signs.
pub fn read_next_key(dir: &Path) -> Result<String, CaError> {
    let path = dir.join(NEXT_KEY);
    std::fs::read_to_string(&path).map_err(|e| CaError::io(&path, e))
}

/// Writes the new root's key, mode 0600.
pub fn write_next_key(dir: &Path, key_pem: &str) -> Result<(), CaError> {
    write_atomic(&dir.join(NEXT_KEY), key_pem, 0o600)
}

/// Brings `root-key.pem` and `root-cert.pem` in line with the recorded phase (idempotent):
/// phase 1 publishes old then new, phase 3 signs with the new key and publishes new then old;
/// a completed rotation whose clean-up was cut short publishes the new root alone.
pub fn repair(dir: &Path) -> Result<State, CaError> {
    let state = load(dir)?;
    let next_key = dir.join(NEXT_KEY);
    match state.phase {
        Phase::Published => {
            write_atomic(
                &dir.join(ROOT_CERT),
                &[state.old_root.as_str(), &state.new_root].concat(),
                0o644,
            )?;
        }
        Phase::Reissuing => {
            write_atomic(&dir.join(ROOT_KEY), &read_next_key(dir)?, 0o600)?;
            write_atomic(
                &dir.join(ROOT_CERT),
                &[state.new_root.as_str(), &state.old_root].concat(),
                0o644,
            )?;
        }
        Phase::Idle if next_key.exists() && !state.new_root.is_empty() => {
            write_atomic(&dir.join(ROOT_CERT), &state.new_root, 0o644)?;
            std::fs::remove_file(&next_key).map_err(|e| CaError::io(&next_key, e))?;
        }
        Phase::Idle => {}
    }
    Ok(state)
}
