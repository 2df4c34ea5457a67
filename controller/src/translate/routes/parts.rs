//! Building blocks of routes shared by the source kinds: string and path
//! matches, header edits, methods and the default retry policy.

use api::waypoint::{
    Destination, Header, HeaderMatch, HeaderModifier, PathMatch, RetryPolicy, StringMatch,
    WeightedDestination, path_match, string_match,
};

use super::catalog::{At, Invalid};
use super::values;

/// Retries every forwarding route gets unless its source says otherwise:
/// Istio's default (2 retries on connection failures, refused streams,
/// gRPC unavailable/cancelled and 503), idempotent requests only.
pub(crate) fn default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        retry_on: [
            "connect-failure",
            "refused-stream",
            "unavailable",
            "cancelled",
            "retriable-status-codes",
        ]
        .map(String::from)
        .to_vec(),
        retriable_status_codes: vec![503],
        backoff: None,
        retry_non_idempotent: false,
    }
}

/// Retry conditions a waypoint understands (Envoy's names).
pub(crate) const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Weighted destinations from raw weights in thousandths (see
/// [`values::weight_milli`]), reduced to the smallest integers with the same
/// ratios; destinations whose weight is zero are left out.
pub(crate) fn weighted(
    destinations: Vec<Destination>,
    raw: &[u64],
    field: &str,
) -> Result<Vec<WeightedDestination>, Invalid> {
    let weights = values::normalize_weights(raw).at(field)?;
    Ok(destinations
        .into_iter()
        .zip(weights)
        .filter(|(_, w)| *w > 0)
        .map(|(d, weight)| WeightedDestination {
            destination: Some(d),
            weight,
            ..Default::default()
        })
        .collect())
}

/// `exact` string match.
pub(crate) fn exact(s: &str) -> StringMatch {
    kind(string_match::Kind::Exact(s.to_string()))
}

/// `prefix` string match.
pub(crate) fn prefix(s: &str) -> StringMatch {
    kind(string_match::Kind::Prefix(s.to_string()))
}

fn kind(k: string_match::Kind) -> StringMatch {
    StringMatch {
        kind: Some(k),
        ignore_case: false,
    }
}

/// A validated `regex` string match.
pub(crate) fn regex(pattern: &str, field: &str) -> Result<StringMatch, Invalid> {
    Ok(kind(string_match::Kind::Regex(
        values::regex(pattern).at(field)?,
    )))
}

/// A path match of one kind.
pub(crate) fn path(kind: path_match::Kind, ignore_case: bool) -> PathMatch {
    PathMatch {
        kind: Some(kind),
        ignore_case,
    }
}

/// A validated regular-expression path match.
pub(crate) fn path_regex(pattern: &str, field: &str) -> Result<PathMatch, Invalid> {
    Ok(path(
        path_match::Kind::Regex(values::regex(pattern).at(field)?),
        false,
    ))
}

/// Checks that a path is absolute.
pub(crate) fn absolute(p: &str, field: &str) -> Result<String, Invalid> {
    if p.starts_with('/') {
        Ok(p.to_string())
    } else {
        Err(Invalid::new(field, format!("{p:?} must start with \"/\"")))
    }
}

/// A header name, lower-cased; only HTTP token characters (and a leading
/// `:` for pseudo-headers) are allowed.
pub(crate) fn header_name(name: &str, field: &str) -> Result<String, Invalid> {
    let body = name.strip_prefix(':').unwrap_or(name);
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if body.is_empty() || !body.chars().all(token) {
        return Err(Invalid::new(
            field,
            format!("{name:?} is not a valid header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A header value: no control characters (they would split the header).
pub(crate) fn header_value(value: &str, field: &str) -> Result<String, Invalid> {
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(Invalid::new(
            field,
            format!("{value:?} contains control characters"),
        ));
    }
    Ok(value.to_string())
}

/// A header condition.
pub(crate) fn header_match(name: String, value: Option<StringMatch>, invert: bool) -> HeaderMatch {
    HeaderMatch {
        name,
        value,
        invert,
    }
}

/// Header edits from (name, value) pairs; `None` when there is nothing to do.
pub(crate) fn header_modifier<'a>(
    set: impl IntoIterator<Item = (&'a str, &'a str)>,
    add: impl IntoIterator<Item = (&'a str, &'a str)>,
    remove: impl IntoIterator<Item = &'a str>,
    field: &str,
) -> Result<Option<HeaderModifier>, Invalid> {
    let headers = |items: Vec<(&str, &str)>, what: &str| -> Result<Vec<Header>, Invalid> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let f = format!("{field}.{what}[{i}]");
                Ok(Header {
                    name: header_name(n, &f)?,
                    value: header_value(v, &f)?,
                })
            })
            .collect()
    };
    let modifier = HeaderModifier {
        set: headers(set.into_iter().collect(), "set")?,
        add: headers(add.into_iter().collect(), "add")?,
        remove: remove
            .into_iter()
            .enumerate()
            .map(|(i, n)| header_name(n, &format!("{field}.remove[{i}]")))
            .collect::<Result<_, _>>()?,
    };
    let empty = modifier.set.is_empty() && modifier.add.is_empty() && modifier.remove.is_empty();
    Ok((!empty).then_some(modifier))
}

/// Appends `more` to `base`, either of which may be absent.
pub(crate) fn merge_modifiers(
    base: Option<HeaderModifier>,
    more: Option<HeaderModifier>,
) -> Option<HeaderModifier> {
    match (base, more) {
        (None, m) | (m, None) => m,
        (Some(mut a), Some(b)) => {
            a.set.extend(b.set);
            a.add.extend(b.add);
            a.remove.extend(b.remove);
            Some(a)
        }
    }
}

/// An HTTP method name: an upper-case token.
pub(crate) fn method(m: &str, field: &str) -> Result<String, Invalid> {
    if !m.is_empty() && m.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(m.to_string())
    } else {
        Err(Invalid::new(
            field,
            format!("{m:?} is not an HTTP method (GET, POST, ...)"),
        ))
    }
}

/// Parses a retry condition list (`"5xx,connect-failure,503"`): names and
/// status codes.
pub(crate) fn retry_on(text: &str, field: &str) -> Result<(Vec<String>, Vec<u32>), Invalid> {
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Ok(code) = item.parse::<u32>() {
            if !(100..=599).contains(&code) {
                return Err(Invalid::new(field, format!("{code} is not an HTTP status")));
            }
            codes.push(code);
        } else if RETRY_ON.contains(&item) {
            conditions.push(item.to_string());
        } else {
            return Err(Invalid::new(
                field,
                format!(
                    "unknown retry condition {item:?} (one of {}, or a status code)",
                    RETRY_ON.join(", ")
                ),
            ));
        }
    }
    if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
        conditions.push("retriable-status-codes".to_string());
    }
    Ok((conditions, codes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_and_values() {
        assert_eq!(header_name("X-Env", "f"), Ok("x-env".to_string()));
        assert_eq!(header_name(":authority", "f"), Ok(":authority".to_string()));
        assert!(header_name("bad name", "f").is_err());
        assert!(header_name("", "f").is_err());
        assert!(header_value("a\r\nb", "f").is_err());
    }

    #[test]
    fn retry_conditions() {
        let (c, codes) = retry_on("5xx, 503,connect-failure", "f").unwrap();
        assert_eq!(c, ["5xx", "connect-failure", "retriable-status-codes"]);
        assert_eq!(codes, [503]);
        let err = retry_on("sometimes", "spec.x").unwrap_err();
        assert_eq!(err.field, "spec.x");
        assert!(err.message.contains("sometimes"));
    }

    #[test]
    fn modifiers() {
        assert_eq!(header_modifier([], [], [], "f"), Ok(None));
        let m = header_modifier([("A", "1")], [], ["B"], "f")
            .unwrap()
            .unwrap();
        assert_eq!(m.set[0].name, "a");
        assert_eq!(m.remove, ["b"]);
        let err = header_modifier([("ok", "1"), ("b d", "2")], [], [], "f").unwrap_err();
        assert_eq!(err.field, "f.set[1]");
    }
}
