//! The certificates page: each workload certificate a proxy holds (from its config dump, as
//! `proxy-config certs` reads it, or, where the admin port is out of reach, from the
//! certificate gauges of its metrics) with the time it has left, marked when close to expiry;
//! and the CA root, judged as `check` judges it.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_registry::scrape::Sample;
use serde::Serialize;
use serde_json::Value;

use crate::operator::check::{Check, Status, root_check, root_validity};
use crate::sandbox::host::state::rfc3339;

/// The gauges every proxy exports per identity it holds (`ztunnel_…`, `waypoint_…`): when its
/// current certificate became valid and when it expires, seconds since the epoch.
const ISSUED_SUFFIX: &str = "_certificate_issued_timestamp_seconds";
const EXPIRATION_SUFFIX: &str = "_certificate_expiration_timestamp_seconds";

/// The CA root's validity, judged as `check` judges it.
#[derive(Clone, Debug, Serialize)]
pub struct RootCertificate {
    /// Unix seconds.
    pub not_before: u64,
    /// Unix seconds.
    pub not_after: u64,
    /// `check`'s verdict on it.
    pub check: Check,
}

/// The root of `pem`, judged now; `None` when it does not parse (`check` says why).
pub fn root_certificate(pem: &str) -> Option<RootCertificate> {
    let (not_before, not_after) = root_validity(pem).ok()?;
    let unix = |time: SystemTime| time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Some(RootCertificate {
        not_before: unix(not_before),
        not_after: unix(not_after),
        check: root_check(
            SystemTime::now(),
            not_before,
            not_after,
            "see `meshctl check`",
        ),
    })
}

/// One workload certificate held by one proxy.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeafCertificate {
    /// The proxy holding it (`ztunnel node1`, `waypoint shop/waypoint-...`).
    pub proxy: String,
    /// Its SPIFFE identity.
    pub identity: String,
    /// `available`, `pending`, `refreshing` or `failed`.
    pub state: String,
    /// RFC 3339, when issued.
    pub not_before: Option<String>,
    /// RFC 3339, when it expires.
    pub not_after: Option<String>,
    /// Seconds left until it expires (negative when expired).
    pub seconds_left: Option<i64>,
    /// Its serial number, hexadecimal.
    pub serial: Option<String>,
    /// Ok; a warning when less than a quarter of its life is left (it should have been
    /// renewed at half-life); an error when expired or failed.
    pub status: Status,
}

/// The workload certificates of one proxy's config dump, judged at `now` (Unix seconds).
pub fn leaf_certificates(proxy: &str, dump: &Value, now: i64) -> Vec<LeafCertificate> {
    crate::operator::dump_certificates::certificates(dump)
        .iter()
        .map(|entry| {
            let cert = &entry["certificate"];
            let text = |value: &Value| value.as_str().map(str::to_owned);
            let not_before = text(&cert["not_before"]);
            let not_after = text(&cert["not_after"]);
            let start = not_before.as_deref().and_then(unix_seconds);
            let end = not_after.as_deref().and_then(unix_seconds);
            let state = text(&entry["state"]).unwrap_or_else(|| "unknown".to_owned());
            let status = judged(&state, start, end, now);
            LeafCertificate {
                proxy: proxy.to_owned(),
                identity: text(&entry["identity"]).unwrap_or_default(),
                state,
                not_before,
                not_after,
                seconds_left: end.map(|end| end - now),
                serial: text(&cert["serial_number"]),
                status,
            }
        })
        .collect()
}

/// The workload certificates one proxy's metrics show (`samples`, one scrape), judged at
/// `now`: state `available` (a proxy exports the gauges of the certificates it holds), no
/// serial (the metrics do not carry it).
pub fn certificates_from_metrics(
    proxy: &str,
    samples: &[Sample],
    now: i64,
) -> Vec<LeafCertificate> {
    let gauge = |identity: &str, suffix: &str| {
        samples
            .iter()
            .find(|s| {
                s.name.ends_with(suffix)
                    && s.labels.get("identity").map(String::as_str) == Some(identity)
            })
            .map(|s| s.value as i64)
    };
    let mut identities: Vec<&str> = samples
        .iter()
        .filter(|s| s.name.ends_with(EXPIRATION_SUFFIX))
        .filter_map(|s| s.labels.get("identity").map(String::as_str))
        .collect();
    identities.sort_unstable();
    identities.dedup();
    identities
        .into_iter()
        .map(|identity| {
            let start = gauge(identity, ISSUED_SUFFIX);
            let end = gauge(identity, EXPIRATION_SUFFIX);
            let text = |at: Option<i64>| at.and_then(|t| u64::try_from(t).ok()).map(rfc3339);
            LeafCertificate {
                proxy: proxy.to_owned(),
                identity: identity.to_owned(),
                state: "available".to_owned(),
                not_before: text(start),
                not_after: text(end),
                seconds_left: end.map(|end| end - now),
                serial: None,
                status: judged("available", start, end, now),
            }
        })
        .collect()
}

/// Ok; a warning with less than a quarter of the lifetime left; an error once expired or
/// when the proxy failed to get it.
fn judged(state: &str, start: Option<i64>, end: Option<i64>, now: i64) -> Status {
    match (state, start, end) {
        ("failed", _, _) => Status::Error,
        (_, _, Some(end)) if end <= now => Status::Error,
        (_, Some(start), Some(end)) if (end - now) * 4 < end - start => Status::Warning,
        _ => Status::Ok,
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time in UTC as the proxies write it
/// (`2026-12-07T00:00:00Z`); `None` for anything else.
pub fn unix_seconds(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 20 || bytes[19] != b'Z' || bytes[10] != b'T' {
        return None;
    }
    let number = |from: usize, to: usize| text.get(from..to)?.parse::<i64>().ok();
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm), March-based years.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(unix_seconds("2026-12-07T01:02:03Z"), Some(1_796_605_323));
        assert_eq!(unix_seconds("2026-12-07 01:02:03Z"), None);
        assert_eq!(unix_seconds("2026-13-07T01:02:03Z"), None);
    }

    #[test]
    fn certificates_close_to_expiry_warn_and_expired_or_failed_ones_are_errors() {
        let issued = unix_seconds("2026-12-07T00:00:00Z").unwrap();
        let entry = |identity: &str, state: &str| {
            serde_json::json!({"identity": identity, "state": state, "certificate": {
                "not_before": "2026-12-07T00:00:00Z", "not_after": "2026-12-08T00:00:00Z",
                "serial_number": "1f"}})
        };
        let dump = serde_json::json!({"certificates": [
            entry("spiffe://cluster.local/ns/shop/sa/orders", "available"),
            entry("spiffe://cluster.local/ns/shop/sa/payments", "failed"),
            {"identity": "spiffe://cluster.local/ns/shop/sa/new", "state": "pending",
             "certificate": null},
        ]});
        let at = |hours: i64| {
            leaf_certificates("ztunnel node1", &dump, issued + hours * 3600)
                .iter()
                .map(|c| c.status)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(12), [Status::Ok, Status::Error, Status::Ok]);
        assert_eq!(at(19), [Status::Warning, Status::Error, Status::Ok]);
        assert_eq!(at(24), [Status::Error, Status::Error, Status::Ok]);
        let first = &leaf_certificates("ztunnel node1", &dump, issued)[0];
        assert_eq!(first.seconds_left, Some(86_400));
        assert_eq!(first.serial.as_deref(), Some("1f"));
        assert_eq!(first.proxy, "ztunnel node1");
    }

    #[test]
    fn certificates_read_from_metrics_match_the_gauges() {
        let issued = unix_seconds("2026-12-07T00:00:00Z").unwrap();
        let orders = "spiffe://cluster.local/ns/shop/sa/orders";
        let sample = |name: &str, identity: &str, value: i64| Sample {
            name: name.to_owned(),
            labels: [("identity".to_owned(), identity.to_owned())].into(),
            value: value as f64,
        };
        let samples = [
            sample(
                "ztunnel_certificate_issued_timestamp_seconds",
                orders,
                issued,
            ),
            sample(
                "ztunnel_certificate_expiration_timestamp_seconds",
                orders,
                issued + 86_400,
            ),
            sample("ztunnel_certificate_expiry_seconds", orders, 0),
            sample(
                "ztunnel_trust_bundle_root_expiration_timestamp_seconds",
                "",
                1,
            ),
        ];
        let found = certificates_from_metrics("ztunnel node2", &samples, issued + 19 * 3600);
        assert_eq!(found.len(), 1);
        let cert = &found[0];
        assert_eq!(
            (
                cert.identity.as_str(),
                cert.proxy.as_str(),
                cert.state.as_str()
            ),
            (orders, "ztunnel node2", "available")
        );
        assert_eq!(cert.not_before.as_deref(), Some("2026-12-07T00:00:00Z"));
        assert_eq!(cert.not_after.as_deref(), Some("2026-12-08T00:00:00Z"));
        assert_eq!(cert.seconds_left, Some(5 * 3600));
        assert_eq!(cert.status, Status::Warning);
        assert_eq!(cert.serial, None);
    }
}
