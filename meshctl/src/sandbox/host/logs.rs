//! Reading log files back: their last lines, for `logs --tail` and for
//! quoting in messages about a process that failed.

use std::path::Path;

/// Last `n` lines of a file ("" when it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Last `n` lines of a file, indented behind a `|` gutter to quote them in a
/// message.
pub fn quoted_tail(path: &Path, n: usize) -> String {
    tail(path, n)
        .lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
