//! The `/config_dump` view of the certificates: identity, state, serial and validity of the
//! current leaf, never keys.

use std::time::{SystemTime, UNIX_EPOCH};

use hbone::Identity;
use serde_json::{Value, json};

use hbone::cert::serial_hex;

use super::entries::{Phase, Status};

/// One identity's row.
pub(super) fn entry(identity: &Identity, refs: usize, status: &Status) -> Value {
    let (state, error) = match &status.phase {
        Phase::Pending => ("pending", None),
        Phase::Available => ("available", None),
        Phase::Refreshing => ("refreshing", None),
        Phase::Failed(e) => ("failed", Some(e.to_string())),
    };
    let certificate = status.cert.as_ref().map(|cert| {
        json!({
            "serial_number": cert.chain().first().and_then(|leaf| serial_hex(leaf)),
            "not_before": rfc3339(cert.not_before()),
            "not_after": rfc3339(cert.expires_at()),
            "expired": cert.is_expired_at(SystemTime::now()),
            "chain_length": cert.chain().len(),
            "roots": cert.roots().len(),
            // Which root of its bundle signed it, for `meshctl check` to compare with the
            // controller's; null when none did.
            "root_serial": cert.issuing_root().and_then(|root| serial_hex(root)),
            // Which certificate signed the leaf: the intermediate after it, else the root
            // (a CA rotation renews what its new signer did not issue).
            "issuer_serial": cert.issuer().and_then(|issuer| serial_hex(issuer)),
        })
    });
    json!({
        "identity": identity.to_string(),
        "state": state,
        "error": error,
        "references": refs,
        "next_attempt": status.next_attempt.map(rfc3339),
        "certificate": certificate,
    })
}

/// Formats a time as RFC 3339 in UTC with second precision (`2024-05-01T12:00:00Z`).
pub(super) fn rfc3339(time: SystemTime) -> String {
    let secs = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs(),
        Err(_) => 0,
    };
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01, counting in 400-year eras of
/// 146 097 days that start on 1 March (so the leap day ends each year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00Z");
    }
}
