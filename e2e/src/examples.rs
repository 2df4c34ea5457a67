//! The repository's `examples/` folders, as tests bring them up and apply them.

use std::path::PathBuf;

/// `examples/<path>` of the repository.
pub fn folder(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path)
}

/// The manifests of `examples/<path>` (its `.yaml` files in name order) as one YAML text.
pub fn yaml(path: &str) -> String {
    let dir = folder(path);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no manifests", dir.display());
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect::<Vec<_>>()
        .join("\n---\n")
}
