//! Where a CA rotation stands, persisted in the CA folder before each step takes effect:
//! `rotation.json` (the phase, the roots before and after, the deadlines) and `next/`, the
//! material that will sign, in either layout of the CA folder (a generated root's
//! `root-key.pem` + `root-cert.pem`, or Istio's plug-in files). [`apply`] writes the live
//! files a phase calls for; [`repair`] runs it before the CA loads, so a controller stopped
//! between two writes resumes where it was.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hbone::Authority;
use hbone::cert::{certificate_to_pem, certificates_from_pem};
use serde::{Deserialize, Serialize};

use super::error::CaError;
use super::layout::{CA_CERT, CA_KEY, CERT_CHAIN, ROOT_CERT, ROOT_KEY};
use super::store::{self, Origin, write_atomic};

/// The rotation's record.
pub const STATE: &str = "rotation.json";
/// The folder of the material that signs once phase 3 begins.
pub const NEXT: &str = "next";
/// Every file of either layout, copied from `next/` (or removed when `next/` lacks it).
/// The keys come first, so that a certificate never lands before its key.
pub const LAYOUT: [&str; 5] = [ROOT_KEY, CA_KEY, ROOT_CERT, CA_CERT, CERT_CHAIN];

/// The phases of a rotation (numbered as the `controller_ca_rotation_phase` gauge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// 0: no rotation in progress.
    #[default]
    Idle,
    /// 1–2: the new roots are published beside the old ones, which still sign; waiting for
    /// every proxy to load that bundle.
    Published,
    /// 3: the new material signs and proxies renew; waiting until no certificate from the
    /// old signer can still be valid.
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
    /// The roots published before the rotation, PEM.
    pub old_roots: String,
    /// The roots of the new material, PEM (the first signs, for a generated root).
    pub new_roots: String,
    /// Window in which proxies renew after the new material starts signing, milliseconds.
    pub reissue_within_ms: u64,
    /// The longest leaf lifetime the old signer may have signed, seconds.
    pub longest_leaf_secs: u64,
    /// Phase 3: when the old roots are dropped at the earliest, seconds since the epoch.
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

fn next_dir(dir: &Path) -> PathBuf {
    dir.join(NEXT)
}

/// Stages a generated root as the next material.
pub fn stage_generated(dir: &Path, next: &Authority) -> Result<(), CaError> {
    let staged = fresh_next(dir)?;
    // The key before the certificate: a stop in between leaves an unusable folder that the
    // next start of a rotation replaces, never a certificate whose key is lost.
    write_atomic(&staged.join(ROOT_KEY), next.key_pem(), 0o600)?;
    write_atomic(&staged.join(ROOT_CERT), &next.root_pem(), 0o644)
}

/// Stages the CA material in `incoming` (either layout) as the next material, once it loads
/// and validates; refused material names `incoming` and the reason, and stages nothing.
pub fn stage_from(dir: &Path, incoming: &Path) -> Result<Authority, CaError> {
    let (authority, _) = store::load_existing(incoming).map_err(|e| in_folder(incoming, e))?;
    let staged = fresh_next(dir)?;
    for name in LAYOUT {
        copy_file(incoming, &staged, name)?;
    }
    Ok(authority)
}

/// Material refused in a folder, the folder named (as the plug-in layout's errors are).
fn in_folder(dir: &Path, error: CaError) -> CaError {
    match error {
        CaError::Cert(source) => CaError::PluggedIn {
            dir: dir.to_path_buf(),
            source,
        },
        other => other,
    }
}

/// An empty `next/`.
fn fresh_next(dir: &Path) -> Result<PathBuf, CaError> {
    let staged = next_dir(dir);
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| CaError::io(&staged, e))?;
    }
    std::fs::create_dir_all(&staged).map_err(|e| CaError::io(&staged, e))?;
    Ok(staged)
}

/// The staged material, loaded (and validated).
pub fn load_next(dir: &Path) -> Result<(Authority, Origin), CaError> {
    store::load_existing(&next_dir(dir))
}

/// The roots of `authority` as one PEM text.
pub fn roots_pem(authority: &Authority) -> String {
    authority.roots_pem().concat()
}

/// Writes the live files the phase of `state` calls for (idempotent): phase 1 publishes the
/// old roots then the new ones; phase 3 installs `next/` and publishes the new roots then the
/// old; once idle, `next/` goes, after publishing the new roots alone if it was installed (a
/// completion cut short). Material staged but never recorded (a stop between staging and
/// phase 1) is discarded, never installed: only phase 3 installs.
pub fn apply(dir: &Path, state: &State) -> Result<(), CaError> {
    let staged = next_dir(dir);
    match state.phase {
        Phase::Published => write_roots(dir, &[&state.old_roots, &state.new_roots]),
        Phase::Reissuing => {
            install(dir, &staged)?;
            write_roots(dir, &[&state.new_roots, &state.old_roots])
        }
        Phase::Idle if staged.exists() => {
            if !state.new_roots.is_empty() && installed(dir, &staged)? {
                write_roots(dir, &[&state.new_roots])?;
            }
            std::fs::remove_dir_all(&staged).map_err(|e| CaError::io(&staged, e))
        }
        Phase::Idle => Ok(()),
    }
}

/// Whether the signing material of `staged` (every file but the published roots, which the
/// phases rewrite) is the live one: phase 3 installed it.
fn installed(dir: &Path, staged: &Path) -> Result<bool, CaError> {
    for name in LAYOUT.into_iter().filter(|name| *name != ROOT_CERT) {
        let from = staged.join(name);
        if from.exists() {
            let read = |path: &Path| std::fs::read(path).map_err(|e| CaError::io(path, e));
            let to = dir.join(name);
            if !to.exists() || read(&from)? != read(&to)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Runs [`apply`] for the recorded state; called before the CA loads.
pub fn repair(dir: &Path) -> Result<State, CaError> {
    let state = load(dir)?;
    apply(dir, &state)?;
    Ok(state)
}

/// Copies every layout file of `staged` over the live one, removing live files it lacks (a
/// generated root replaced by a plugged-in intermediate loses its `root-key.pem`). The key
/// files are written before the certificates.
fn install(dir: &Path, staged: &Path) -> Result<(), CaError> {
    // Without the staged material there is nothing to install, and removing the live files
    // it lacks would remove them all.
    if !staged.join(ROOT_CERT).exists() {
        return Err(CaError::io(
            &staged.join(ROOT_CERT),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the staged CA material is missing",
            ),
        ));
    }
    for name in LAYOUT {
        let to = dir.join(name);
        if !copy_file(staged, dir, name)? && to.exists() {
            std::fs::remove_file(&to).map_err(|e| CaError::io(&to, e))?;
        }
    }
    Ok(())
}

/// Copies file `name` of folder `from` into folder `to` (keys with mode 0600); false when
/// `from` has no such file.
fn copy_file(from: &Path, to: &Path, name: &str) -> Result<bool, CaError> {
    let source = from.join(name);
    if !source.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&source).map_err(|e| CaError::io(&source, e))?;
    let mode = if name.ends_with("key.pem") {
        0o600
    } else {
        0o644
    };
    write_atomic(&to.join(name), &text, mode)?;
    Ok(true)
}

/// Writes `root-cert.pem` as the given PEM texts' certificates, each once, in order.
fn write_roots(dir: &Path, groups: &[&str]) -> Result<(), CaError> {
    let mut seen = Vec::new();
    for group in groups.iter().filter(|g| !g.trim().is_empty()) {
        for der in certificates_from_pem(group, "roots")? {
            if !seen.contains(&der) {
                seen.push(der);
            }
        }
    }
    let text: String = seen.iter().map(certificate_to_pem).collect();
    write_atomic(&dir.join(ROOT_CERT), &text, 0o644)
}
