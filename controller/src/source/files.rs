//! The file source: every `*.yaml`, `*.yml` and `*.json` under one or more
//! directories (`--config-dir`, repeatable), rescanned by polling.
//!
//! Polling file stamps (mtime, size, inode) is cheap for the folder sizes the
//! sandbox produces and works on every filesystem, unlike inotify on
//! bind-mounted or network folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::error::SourceError;
use crate::model::{Index, Object, Problem, parse_documents};

/// Deeper trees are not config folders; the limit also stops symlink loops.
const MAX_DEPTH: usize = 16;

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// What the source remembers about one file.
#[derive(Clone, Debug)]
struct FileState {
    stamp: Stamp,
    /// The objects in force for this file: those of the last version that
    /// parsed cleanly, or the good documents of a first, partly bad version.
    objects: Vec<Object>,
    /// Problems of the current version.
    problems: Vec<Problem>,
    /// The file was modified so recently that a further write in the same
    /// timestamp tick (filesystem clocks are coarse) would leave its stamp
    /// unchanged: reread it until its stamp is old enough to trust.
    racy: bool,
}

/// The outcome of one [`FileSource::scan`].
#[derive(Clone, Debug)]
pub struct ScanResult {
    /// True when any file was added, removed or changed since the previous scan.
    pub changed: bool,
    /// The index built from the current files.
    pub index: Arc<Index>,
    /// Number of files read.
    pub files: usize,
}

/// Reads manifests from directories and keeps an [`Index`] of them.
#[derive(Debug)]
pub struct FileSource {
    dirs: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
    /// Files in scan order (directory order, then path order): later files
    /// win conflicts, so the order must not depend on map ordering across dirs.
    order: Vec<PathBuf>,
    index: Arc<Index>,
    scanned: bool,
}

impl FileSource {
    /// A source over `dirs`; nothing is read until [`FileSource::scan`].
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            files: BTreeMap::new(),
            order: Vec::new(),
            index: Arc::new(Index::new()),
            scanned: false,
        }
    }

    /// The index of the last scan.
    pub fn index(&self) -> Arc<Index> {
        self.index.clone()
    }

    /// Rereads changed files and rebuilds the index from disk. Files that
    /// disappeared take their objects with them; a file that no longer
    /// parses keeps its last good objects (and reports why).
    pub fn scan(&mut self) -> ScanResult {
        let mut dir_problems = Vec::new();
        let mut found = Vec::new();
        for dir in &self.dirs {
            if let Err(e) = walk(dir, 0, &mut found) {
                dir_problems.push(
                    Problem::new(&dir.display().to_string(), "", "", "")
                        .message(format!("cannot read config directory: {e}")),
                );
            }
        }
        // A file reachable from two dirs counts once, at its first place.
        let mut seen = std::collections::BTreeSet::new();
        found.retain(|(p, _)| seen.insert(p.clone()));

        let now = SystemTime::now();
        let mut reloaded = !self.scanned || found.len() != self.files.len();
        let mut files = BTreeMap::new();
        for (path, stamp) in &found {
            let previous = self.files.remove(path);
            match previous {
                Some(prev) if prev.stamp == *stamp && !prev.racy => {
                    files.insert(path.clone(), prev);
                }
                prev => {
                    reloaded = true;
                    files.insert(path.clone(), load(path, *stamp, prev, now));
                }
            }
        }
        // Whatever is left in self.files was deleted.
        reloaded |= !self.files.is_empty();
        let order: Vec<PathBuf> = found.into_iter().map(|(p, _)| p).collect();
        reloaded |= order != self.order;
        self.files = files;
        self.order = order;
        self.scanned = true;

        let mut changed = false;
        if reloaded || !dir_problems.is_empty() {
            let mut origins: Vec<(String, Vec<Object>, Vec<Problem>)> = Vec::new();
            if !dir_problems.is_empty() {
                origins.push((String::new(), Vec::new(), dir_problems));
            }
            for path in &self.order {
                if let Some(state) = self.files.get(path) {
                    origins.push((
                        path.display().to_string(),
                        state.objects.clone(),
                        state.problems.clone(),
                    ));
                }
            }
            let index = Index::from_origins(origins);
            // A reread file may hold the same content (see `racy`): only a
            // different index is a change worth publishing.
            if index != *self.index {
                self.index = Arc::new(index);
                changed = true;
            }
        }
        ScanResult {
            changed,
            index: self.index.clone(),
            files: self.files.len(),
        }
    }

    /// Rescans every `interval` and publishes the index on `tx`: once after
    /// the first scan (even when empty, so consumers can become ready), then
    /// whenever it changed. Returns when every receiver is gone. Problems are
    /// not logged here: they travel in the index, and the translation that
    /// consumes it reports them.
    pub async fn watch(mut self, tx: tokio::sync::watch::Sender<Arc<Index>>, interval: Duration) {
        let mut first = true;
        loop {
            // Reading files blocks; keep it off the async workers.
            let joined = tokio::task::spawn_blocking(move || {
                let result = self.scan();
                (self, result)
            })
            .await;
            let Ok((source, result)) = joined else {
                tracing::error!("file source scan panicked; stopping the file watch");
                return;
            };
            self = source;
            if result.changed || first {
                tracing::debug!(
                    files = result.files,
                    objects = result.index.len(),
                    problems = result.index.problems().len(),
                    "config files changed"
                );
                if tx.send(result.index).is_err() {
                    return;
                }
            }
            first = false;
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Collects config files under `dir`, sorted, with their stamps.
fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, Stamp)>) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Editors' swap and backup files, and `..data` style links of
        // mounted ConfigMaps, start with a dot.
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a file that vanished meanwhile is simply skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                // An unreadable subfolder must not hide the rest.
                let _ = walk(&path, depth + 1, out);
            }
        } else if meta.is_file() && is_config_file(name) {
            out.push((path, stamp(&meta)));
        }
    }
    Ok(())
}

fn is_config_file(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    }
}

/// How long after a modification a file's stamp is not trusted.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Reads and parses one file, falling back to the previous good objects.
fn load(path: &Path, stamp: Stamp, previous: Option<FileState>, now: SystemTime) -> FileState {
    let racy = stamp
        .modified
        .is_none_or(|m| now.duration_since(m).map_or(true, |age| age < RACY_WINDOW));
    let origin = path.display().to_string();
    let text = std::fs::read(path)
        .map_err(|source| SourceError::Io {
            path: origin.clone(),
            source,
        })
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| SourceError::NotText {
                path: origin.clone(),
            })
        });
    let parsed = match text {
        Ok(text) => parse_documents(&origin, &text, origin.ends_with(".json")),
        Err(e) => crate::model::Parsed {
            objects: Vec::new(),
            problems: vec![Problem::new(&origin, "", "", "").message(e.to_string())],
        },
    };
    if parsed.problems.is_empty() {
        return FileState {
            stamp,
            objects: parsed.objects,
            problems: Vec::new(),
            racy,
        };
    }
    match previous {
        // Last good: a broken edit must not take working config away.
        Some(prev) if !prev.objects.is_empty() => {
            let mut problems = parsed.problems;
            problems.push(Problem::new(&origin, "", "", "").message(format!(
                "keeping the last good version of this file ({} objects) until it is fixed",
                prev.objects.len()
            )));
            FileState {
                stamp,
                objects: prev.objects,
                problems,
                racy,
            }
        }
        _ => FileState {
            stamp,
            objects: parsed.objects,
            problems: parsed.problems,
            racy,
        },
    }
}
