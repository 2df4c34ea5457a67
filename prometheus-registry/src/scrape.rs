//! Reading the text exposition format back, as a scraper does: `meshctl stat` and the tests
//! read the proxies' `/metrics` with it.

use std::collections::BTreeMap;

/// One sample of a Prometheus text exposition: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_count`, `_sum`, `_bucket` suffixes as exposed).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A sample of `name` with `labels` (name, value pairs) and `value`.
    pub fn new(name: &str, labels: &[(&str, &str)], value: f64) -> Self {
        Self {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            value,
        }
    }
}

/// Parses the Prometheus text format (comments skipped, escapes in label values honoured).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let Some((labels, rest)) = parse_labels(&line[open + 1..]) else {
                    continue;
                };
                (&line[..open], labels, rest)
            }
            None => match line.split_once(char::is_whitespace) {
                Some((name, rest)) => (name, BTreeMap::new(), rest),
                None => continue,
            },
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push(Sample {
            name: name.trim().to_string(),
            labels,
            value,
        });
    }
    out
}

/// `k="v",...}` → the labels and what follows the closing brace.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s.trim_start();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once('=')?;
        let mut chars = after_key.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = &after_key[1 + end + 1..];
    }
}

/// Sum of metric `name` over the `samples` carrying every label in `filter`.
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.has(filter))
        .map(|s| s.value)
        .sum()
}

impl Sample {
    /// Whether the sample carries every label of `filter` with its value.
    pub fn has(&self, filter: &[(&str, &str)]) -> bool {
        filter
            .iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }

    /// The value of label `key`, empty when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parses_with_escapes_timestamps_and_bare_names() {
        let text = "# HELP istio_requests_total Total requests.\n\
                    # TYPE istio_requests_total counter\n\
                    istio_requests_total{response_code=\"200\",destination_service_name=\"orders\",x=\"a\\\"b,}\"} 7\n\
                    istio_requests_total{response_code=\"503\",destination_service_name=\"orders\"} 3 1700000000\n\
                    istio_requests_total{response_code=\"200\",destination_service_name=\"other\"} 100\n\
                    process_open_fds 12\n\
                    broken{x=\"unterminated} 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["x"], "a\"b,}");
        assert_eq!(samples[0].label("missing"), "");
        assert_eq!(samples[3].name, "process_open_fds");
        let orders = [("destination_service_name", "orders")];
        assert_eq!(sum(&samples, "istio_requests_total", &orders), 10.0);
        let ok = [
            ("destination_service_name", "orders"),
            ("response_code", "200"),
        ];
        assert_eq!(sum(&samples, "istio_requests_total", &ok), 7.0);
    }
}
