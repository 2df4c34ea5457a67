//! The Prometheus text exposition format (version 0.0.4): family headers, label sets and
//! their escaping, and samples.

use std::fmt::{Display, Write as _};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes the `# HELP` and `# TYPE` lines of the metric family `name` (`kind`: "counter",
/// "gauge" or "histogram").
pub fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes the one sample of a family without labels: `name value`.
pub fn value(out: &mut String, name: &str, value: impl Display) {
    let _ = writeln!(out, "{name} {value}");
}

/// Renders a label set, `{name="value",...}` in the order given; each entry is
/// `(name, value, default)`, the default standing in for an empty value (Istio reports
/// "unknown" rather than an empty label).
pub fn render_labels(pairs: &[(&str, &str, &str)]) -> String {
    let mut out = String::with_capacity(32 * pairs.len() + 2);
    out.push('{');
    for (i, (name, value, default)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let value = if value.is_empty() { default } else { value };
        let _ = write!(out, "{name}=\"");
        escape_into(&mut out, value);
        out.push('"');
    }
    out.push('}');
    out
}

/// Appends `value` escaped as the text exposition format wants label values.
pub fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_render_in_order_with_defaults_and_escapes() {
        let text = render_labels(&[
            ("a", "x\"y\\z\nw", "unknown"),
            ("b", "", "unknown"),
            ("c", "", ""),
        ]);
        assert_eq!(text, r#"{a="x\"y\\z\nw",b="unknown",c=""}"#);
        assert_eq!(render_labels(&[]), "{}");
    }
}
