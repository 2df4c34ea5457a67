//! Output to the operator's terminal that never aborts a verb.

use std::io::Write;

/// Prints to stdout, ignoring errors: a closed pipe (`meshctl up | head`)
/// must not abort a verb half way through building or tearing down.
pub fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// [`emit`] with a newline.
pub fn say(line: impl AsRef<str>) {
    emit(&format!("{}\n", line.as_ref()));
}
