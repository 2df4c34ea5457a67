//! The Prometheus text exposition format (version 0.0.4): family headers, label sets and
//! their escaping, and samples.

use std::fmt::{Display, Write as _};
use std::sync::Arc;

use crate::Series;

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

/// Writes one sample of `name` per series, in the order given, its value picked from the
/// series' values: `name{labels} value`.
pub fn samples<V, T: Display>(
    out: &mut String,
    name: &str,
    series: &[Arc<Series<V>>],
    value: impl Fn(&V) -> T,
) {
    for s in series {
        let _ = writeln!(out, "{name}{} {}", s.labels, value(&s.values));
    }
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

    #[test]
    fn samples_follow_their_series() {
        let series = [
            Arc::new(Series {
                labels: "{k=\"a\"}".to_owned(),
                values: 1u64,
            }),
            Arc::new(Series {
                labels: String::new(),
                values: 2u64,
            }),
        ];
        let mut out = String::new();
        family(&mut out, "x_total", "Things.", "counter");
        samples(&mut out, "x_total", &series, |v| *v * 10);
        value(&mut out, "y", -1);
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{k=\"a\"} 10\nx_total 20\ny -1\n"
        );
    }
}
