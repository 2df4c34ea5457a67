//! Prometheus text exposition, as the mesh's proxies serve it on `/metrics`: parsed into
//! samples and summed over the samples that carry given labels.

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

/// Parses the Prometheus text format (comments skipped, escapes in label values honoured).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
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

/// Sum of metric `name` over the samples carrying every label in `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            filter
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// `istio_requests_total` summed over the samples matching `filter`.
pub fn requests_total(text: &str, filter: &[(&str, &str)]) -> f64 {
    metric_sum(text, "istio_requests_total", filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_parses() {
        let text = "# HELP istio_requests_total Total requests.\n\
                    # TYPE istio_requests_total counter\n\
                    istio_requests_total{response_code=\"200\",destination_service_name=\"orders\",x=\"a\\\"b,}\"} 7\n\
                    istio_requests_total{response_code=\"503\",destination_service_name=\"orders\"} 3 1700000000\n\
                    istio_requests_total{response_code=\"200\",destination_service_name=\"other\"} 100\n\
                    process_open_fds 12\n";
        let samples = parse_metrics(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].labels["x"], "a\"b,}");
        assert_eq!(samples[3].name, "process_open_fds");
        assert_eq!(
            requests_total(text, &[("destination_service_name", "orders")]),
            10.0
        );
        assert_eq!(
            requests_total(
                text,
                &[
                    ("destination_service_name", "orders"),
                    ("response_code", "200")
                ]
            ),
            7.0
        );
    }
}
