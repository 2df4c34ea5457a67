//! Where a CA rotation stands ([`State`]) and what each phase makes of the live material
//! ([`plan`], over material by file name, shared by the folder and the Kubernetes Secrets:
//! see [`super::rotation_store`]). In the CA folder, persisted before each step takes
//! effect: `rotation.json` (the phase, the roots before and after, the deadlines) and
//! `next/`, the material that will sign, in either layout of the CA folder (a generated
//! root's `root-key.pem` + `root-cert.pem`, or Istio's plug-in files). [`apply`] writes the
//! live files a phase calls for; [`repair`] runs it before the CA loads, so a controller
//! stopped between two writes resumes where it was.

use std::collections::BTreeMap;
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

/// Stages `next` as the next material (in a fresh `next/`). The keys are written before
/// the certificates: a stop in between leaves an unusable folder that the next start of a
/// rotation replaces, never a certificate whose key is lost.
pub fn stage_material(dir: &Path, next: &Material) -> Result<(), CaError> {
    let staged = fresh_next(dir)?;
    write_material(&staged, &Material::new(), next)
}

/// The CA material in the folder `incoming` (either layout), once it loads and validates;
/// refused material names `incoming` and the reason.
pub fn incoming_folder(incoming: &Path) -> Result<(Material, Authority), CaError> {
    let (authority, _) = store::load_existing(incoming).map_err(|e| in_folder(incoming, e))?;
    Ok((read_material(incoming)?, authority))
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

/// A CA's material as the files of [`LAYOUT`] by name: a folder's files, or what the
/// Kubernetes Secrets hold under the folder's names. The phases are decided on it alone, so
/// both places a rotation lives in follow the same logic ([`plan`]).
pub type Material = BTreeMap<String, String>;

/// What the phase of a record calls for: the live material, and whether the staged
/// material is to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The live material.
    pub live: Material,
    /// Whether the staged material has served its purpose (or was never recorded).
    pub drop_staged: bool,
}

/// The live material the phase of `state` calls for, given the live material and the staged
/// one (idempotent): phase 1 publishes the old roots then the new ones; phase 3 installs the
/// staged material and publishes the new roots then the old; once idle, the staged material
/// goes, after publishing the new roots alone if it was installed (a completion cut short).
/// Material staged but never recorded (a stop between staging and phase 1) is discarded,
/// never installed: only phase 3 installs.
pub fn plan(state: &State, live: &Material, staged: Option<&Material>) -> Result<Plan, CaError> {
    let mut next = live.clone();
    let drop_staged = match state.phase {
        Phase::Published => {
            next.insert(
                ROOT_CERT.into(),
                merge_roots(&[&state.old_roots, &state.new_roots])?,
            );
            false
        }
        Phase::Reissuing => {
            // Without the staged material there is nothing to install, and removing the live
            // files it lacks would remove them all.
            let staged = staged
                .filter(|s| s.contains_key(ROOT_CERT))
                .ok_or(CaError::StagedMissing)?;
            next = staged.clone();
            next.insert(
                ROOT_CERT.into(),
                merge_roots(&[&state.new_roots, &state.old_roots])?,
            );
            false
        }
        Phase::Idle => match staged {
            Some(staged) => {
                if !state.new_roots.is_empty() && installed(live, staged) {
                    next.insert(ROOT_CERT.into(), merge_roots(&[&state.new_roots])?);
                }
                true
            }
            None => false,
        },
    };
    Ok(Plan {
        live: next,
        drop_staged,
    })
}

/// Whether the signing material of `staged` (every file but the published roots, which the
/// phases rewrite) is the live one: phase 3 installed it.
fn installed(live: &Material, staged: &Material) -> bool {
    staged
        .iter()
        .filter(|(name, _)| name.as_str() != ROOT_CERT)
        .all(|(name, text)| live.get(name) == Some(text))
}

/// The given PEM texts' certificates, each once, in order, as one PEM text.
pub(crate) fn merge_roots(groups: &[&str]) -> Result<String, CaError> {
    let mut seen = Vec::new();
    for group in groups.iter().filter(|g| !g.trim().is_empty()) {
        for der in certificates_from_pem(group, "roots")? {
            if !seen.contains(&der) {
                seen.push(der);
            }
        }
    }
    Ok(seen.iter().map(certificate_to_pem).collect())
}

/// The layout files present in `dir`.
pub fn read_material(dir: &Path) -> Result<Material, CaError> {
    let mut material = Material::new();
    for name in LAYOUT {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                material.insert(name.to_owned(), text);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CaError::io(&path, e)),
        }
    }
    Ok(material)
}

/// Makes the layout files of `dir` those of `to`, given that they are `from` now: changed
/// files are written (keys with mode 0600, keys before certificates, so that a certificate
/// never lands before its key) and files `to` lacks removed (a generated root replaced by a
/// plugged-in intermediate loses its `root-key.pem`).
fn write_material(dir: &Path, from: &Material, to: &Material) -> Result<(), CaError> {
    for name in LAYOUT {
        let path = dir.join(name);
        match (to.get(name), from.get(name)) {
            (Some(text), current) if current != Some(text) => {
                let mode = if name.ends_with("key.pem") {
                    0o600
                } else {
                    0o644
                };
                write_atomic(&path, text, mode)?;
            }
            (None, Some(_)) => std::fs::remove_file(&path).map_err(|e| CaError::io(&path, e))?,
            _ => {}
        }
    }
    Ok(())
}

/// Writes the live files the phase of `state` calls for (see [`plan`]).
pub fn apply(dir: &Path, state: &State) -> Result<(), CaError> {
    let staged_dir = next_dir(dir);
    let staged = match staged_dir.exists() {
        true => Some(read_material(&staged_dir)?),
        false => None,
    };
    if state.phase == Phase::Idle && staged.is_none() {
        return Ok(());
    }
    let live = read_material(dir)?;
    let planned = plan(state, &live, staged.as_ref())?;
    write_material(dir, &live, &planned.live)?;
    if planned.drop_staged {
        std::fs::remove_dir_all(&staged_dir).map_err(|e| CaError::io(&staged_dir, e))?;
    }
    Ok(())
}

/// Runs [`apply`] for the recorded state; called before the CA loads.
pub fn repair(dir: &Path) -> Result<State, CaError> {
    let state = load(dir)?;
    apply(dir, &state)?;
    Ok(state)
}
