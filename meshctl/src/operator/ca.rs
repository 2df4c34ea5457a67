//! `meshctl ca status`: a root rotation's phase as the controller's `/debug/ca` reports it,
//! in words (the same in either mode; each gathers the JSON its own way).

use serde_json::Value;

/// What each phase means, by the number the `controller_ca_rotation_phase` gauge shows.
fn phase_text(number: u64) -> &'static str {
    match number {
        0 => "0 (idle): no root rotation in progress",
        1 => "1 (published): the new root is trusted beside the old one, which still signs",
        3 => "3 (reissuing): the new root signs; proxies renew their certificates",
        _ => "unknown",
    }
}

/// `seconds` as the largest two units: `3d 4h`, `5m 2s`, `12s`.
pub fn span(seconds: u64) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (size, unit) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// `at` (seconds since the epoch) relative to `now`.
fn relative(at: u64, now: u64) -> String {
    if at >= now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

/// The status as aligned lines.
pub fn status_text(status: &Value, now: u64) -> String {
    let number = status["phase_number"].as_u64().unwrap_or(u64::MAX);
    let mut rows = vec![("PHASE", phase_text(number).to_owned())];
    if number != 0 {
        let since = status["since"].as_u64().unwrap_or(0);
        rows.push(("SINCE", relative(since, now)));
    }
    let roots: Vec<String> = status["roots"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, root)| {
            let serial = root[0].as_str().unwrap_or("?");
            let expires = relative(root[1].as_u64().unwrap_or(0), now);
            let role = if i == 0 { "signing, " } else { "" };
            format!("{serial} ({role}expires {expires})")
        })
        .collect();
    rows.push(("ROOTS", roots.join("\n")));
    let proxies = &status["proxies"];
    let stale = proxies["stale"].as_array().map_or(0, Vec::len);
    rows.push((
        "PROXIES",
        format!(
            "{} on the served trust bundle, {stale} not yet, {} not subscribed to it",
            proxies["current"].as_u64().unwrap_or(0),
            proxies["not_subscribed"].as_u64().unwrap_or(0)
        ),
    ));
    rows.push((
        "WAITING FOR",
        status["waiting_for"].as_str().unwrap_or("").to_owned(),
    ));
    let completed = status["completed_at"].as_u64().unwrap_or(0);
    let last = if completed == 0 {
        "never".to_owned()
    } else {
        relative(completed, now)
    };
    rows.push(("LAST COMPLETED", last));
    let mut out = String::new();
    for (label, value) in rows {
        for (i, line) in value.lines().enumerate() {
            let label = if i == 0 { label } else { "" };
            out.push_str(&format!("{label:<15} {line}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn spans_keep_two_units() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(span(302), "5m 2s");
    }

    #[test]
    fn a_rotation_in_phase_three_reads_as_words() {
        let status = json!({
            "phase": "reissuing", "phase_number": 3, "since": 1_000, "completed_at": 0,
            "roots": [["0a", 1_000 + 86_400], ["0b", 500]],
            "proxies": {"current": 3, "stale": ["ztunnel~x"], "not_subscribed": 2},
            "waiting_for": "certificates from the old root to expire",
        });
        let text = status_text(&status, 1_030);
        assert_eq!(
            text,
            "PHASE           3 (reissuing): the new root signs; proxies renew their certificates\n\
             SINCE           30s ago\n\
             ROOTS           0a (signing, expires in 23h 59m)\n\
             \x20               0b (expires 8m 50s ago)\n\
             PROXIES         3 on the served trust bundle, 1 not yet, 2 not subscribed to it\n\
             WAITING FOR     certificates from the old root to expire\n\
             LAST COMPLETED  never\n"
        );
    }
}
