//! Value parsing shared by the route translations: durations, regular
//! expressions, weights and percentages, each failing with a message that
//! names what was expected.

use api::prost_types::Duration;

/// Longest regular expression accepted, in bytes: patterns come from users
/// and are compiled by every waypoint.
const MAX_REGEX_LEN: usize = 4096;
/// Compiled-size limit of a regular expression (bytes of program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Largest duration accepted (a year): anything longer is a typo.
const MAX_DURATION_SECS: u64 = 365 * 24 * 3600;

/// Parses a Go-style duration (`1h2m`, `1.5s`, `300ms`, `0`), the form
/// Istio, Linkerd and the Gateway API accept.
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        Err(format!(
            "{text:?} is not a duration ({why}; e.g. 500ms, 10s, 1m)"
        ))
    };
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::default());
    }
    if s.is_empty() {
        return bad("empty");
    }
    if s.starts_with('-') {
        return bad("negative");
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return bad("a number must come before each unit");
        }
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return bad("missing unit"),
            _ => return bad("unknown unit"),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && frac.is_empty() || frac.contains('.') {
            return bad("malformed number");
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            match whole.parse() {
                Ok(w) => w,
                Err(_) => return bad("number too large"),
            }
        };
        let mut part = whole.saturating_mul(scale);
        // Fractions: digit by digit, so "1.5s" is exact.
        let mut div = 1u128;
        for d in frac.chars() {
            div = div.saturating_mul(10);
            let digit = u128::from(d.to_digit(10).unwrap_or(0));
            part = part.saturating_add(digit.saturating_mul(scale) / div);
        }
        nanos = nanos.saturating_add(part);
        rest = tail;
    }
    if nanos > u128::from(MAX_DURATION_SECS) * 1_000_000_000 {
        return bad("longer than a year");
    }
    // Both fit: seconds ≤ MAX_DURATION_SECS, nanos < 1e9.
    Ok(Duration {
        seconds: (nanos / 1_000_000_000) as i64,
        nanos: (nanos % 1_000_000_000) as i32,
    })
}

/// A duration where zero means "none" (Gateway API timeouts, Istio
/// timeouts): `None` for zero.
pub(crate) fn optional_duration(text: &str) -> Result<Option<Duration>, String> {
    let d = duration(text)?;
    Ok((d.seconds != 0 || d.nanos != 0).then_some(d))
}

/// A duration that must be positive.
pub(crate) fn positive_duration(text: &str) -> Result<Duration, String> {
    optional_duration(text)?.ok_or_else(|| format!("{text:?} must be longer than zero"))
}

/// Checks a regular expression the way waypoints use it: RE2 syntax,
/// matched against the whole value.
pub(crate) fn regex(pattern: &str) -> Result<String, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regular expression longer than {MAX_REGEX_LEN} bytes"
        ));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| pattern.to_string())
        .map_err(|e| {
            // The crate's message spans several lines with a caret diagram.
            let detail = e.to_string();
            let last = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid");
            format!(
                "{pattern:?} is not a valid regular expression ({})",
                last.trim()
            )
        })
}

/// A weight in thousandths: an integer (`3`) or a Kubernetes quantity
/// (`900m`, `1`, `1.5`, `2k`), as SMI and Linkerd write them.
pub(crate) fn weight_milli(value: &serde_json::Value) -> Result<u64, String> {
    let bad =
        || format!("{value} is not a weight (a non-negative integer or quantity such as 500m)");
    let units: f64 = match value {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        serde_json::Value::String(s) => quantity(s).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !units.is_finite() || !(0.0..=1e12).contains(&units) {
        return Err(bad());
    }
    Ok((units * 1000.0).round() as u64)
}

/// A Kubernetes quantity as a number of units.
fn quantity(text: &str) -> Option<f64> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number.starts_with('+') && number.len() == 1 {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * factor)
}

/// Turns raw weights into the smallest integers with the same ratios.
/// Zero weights stay zero (the destination gets nothing); all zero is an
/// error.
pub(crate) fn normalize_weights(raw: &[u64]) -> Result<Vec<u32>, String> {
    let divisor = raw.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if divisor == 0 {
        return Err("weights add up to 0: no destination would get traffic".to_string());
    }
    raw.iter()
        .map(|w| {
            u32::try_from(w / divisor)
                .map_err(|_| "weights differ too much to be represented".to_string())
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A percentage between 0 and 100.
pub(crate) fn percentage(value: f64) -> Result<f64, String> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not a percentage between 0 and 100"))
    }
}

/// gRPC status codes by name, as Istio's fault injection accepts them.
pub(crate) fn grpc_status(value: &serde_json::Value) -> Result<u32, String> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    let code = match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|p| p as u64)
            .or_else(|| s.parse().ok()),
        _ => None,
    };
    match code {
        Some(c @ 1..=16) => Ok(c as u32),
        _ => Err(format!(
            "{value} is not a gRPC status code (e.g. UNAVAILABLE)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: i64, n: i32) -> Duration {
        Duration {
            seconds: s,
            nanos: n,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("10s"), Ok(d(10, 0)));
        assert_eq!(duration("1.5s"), Ok(d(1, 500_000_000)));
        assert_eq!(duration("300ms"), Ok(d(0, 300_000_000)));
        assert_eq!(duration("1h2m3s"), Ok(d(3723, 0)));
        assert_eq!(duration("0"), Ok(d(0, 0)));
        assert_eq!(duration(".5m"), Ok(d(30, 0)));
        assert_eq!(duration("100us"), Ok(d(0, 100_000)));
        for bad in ["", "10", "s", "1x", "-1s", "1..5s", "9999h"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(optional_duration("0s"), Ok(None));
        assert!(positive_duration("0ms").is_err());
    }

    #[test]
    fn regexes() {
        assert!(regex("/api/v[0-9]+/.*").is_ok());
        let err = regex("/api/(unclosed").unwrap_err();
        assert!(err.contains("not a valid regular expression"), "{err}");
        assert!(regex(&"a".repeat(MAX_REGEX_LEN + 1)).is_err());
    }

    #[test]
    fn weights() {
        let w = |v: serde_json::Value| weight_milli(&v);
        assert_eq!(w(serde_json::json!(90)), Ok(90_000));
        assert_eq!(w(serde_json::json!("900m")), Ok(900));
        assert_eq!(w(serde_json::json!("1")), Ok(1000));
        assert_eq!(w(serde_json::json!("1.5")), Ok(1500));
        assert_eq!(w(serde_json::json!("2k")), Ok(2_000_000));
        assert!(w(serde_json::json!("ten")).is_err());
        assert!(w(serde_json::json!(-1)).is_err());
        assert!(w(serde_json::json!(true)).is_err());
        assert_eq!(normalize_weights(&[900, 100]), Ok(vec![9, 1]));
        assert_eq!(normalize_weights(&[90_000, 0, 10_000]), Ok(vec![9, 0, 1]));
        assert!(normalize_weights(&[0, 0]).is_err());
    }

    #[test]
    fn grpc_statuses() {
        assert_eq!(grpc_status(&serde_json::json!("UNAVAILABLE")), Ok(14));
        assert_eq!(grpc_status(&serde_json::json!(4)), Ok(4));
        assert!(grpc_status(&serde_json::json!("NOPE")).is_err());
        assert!(grpc_status(&serde_json::json!("OK")).is_err());
    }
}
