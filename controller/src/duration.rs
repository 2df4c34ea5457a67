//! Durations as command-line flags take them (the controller's `--leader-elect-*`, meshctl's
//! `--window`, `--new-root-ttl`, ...).

/// `500ms`, `90s`, `2m`, `12h`, `3650d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(at);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a number with a unit (ms, s, m, h, d), e.g. 30s"))?;
    let millis = match unit {
        "ms" => Some(value),
        "" | "s" => value.checked_mul(1000),
        "m" => value.checked_mul(60_000),
        "h" => value.checked_mul(3_600_000),
        "d" => value.checked_mul(86_400_000),
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    let millis = millis.ok_or_else(|| format!("{text:?}: too long"))?;
    Ok(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lifetimes_take_days() {
        assert_eq!(
            parse_duration("3650d"),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("1y").unwrap_err().contains("unit must be"));
        assert!(parse_duration("d").is_err());
    }
}
