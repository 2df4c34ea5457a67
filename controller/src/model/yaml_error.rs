//! Decoding errors of serde_yaml_ng, split into the field path and the bare message, for
//! problems that name the field.

/// Splits serde_yaml_ng's `path: message at line L column C` into the path
/// and the bare message (the location is re-added relative to the file).
pub(crate) fn split_error(text: &str) -> (String, String) {
    let stripped = strip_locations(text);
    let text = stripped.as_str();
    if let Some((path, rest)) = text.split_once(": ") {
        let looks_like_path = !path.is_empty()
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]/".contains(c));
        if looks_like_path {
            return (path.to_string(), rest.to_string());
        }
    }
    (String::new(), text.to_string())
}

/// Removes every ` at line N column M` (relative to the document, hence
/// misleading in a multi-document file).
fn strip_locations(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let n = digits(after);
        let tail = &after[n..];
        match tail.strip_prefix(" column ") {
            Some(col) if n > 0 => rest = &col[digits(col)..],
            // Not a location after all: keep the text.
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
