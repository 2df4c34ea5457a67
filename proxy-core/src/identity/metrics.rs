//! What the certificate manager exports: per identity it holds, when its certificate was issued
//! and expires and how long is left; the trust bundle's roots and when each expires; certificate requests
//! by result. Names are `<component>_...` (`ztunnel_certificate_expiry_seconds`), the time left
//! shaped like Istio agent's `istio_agent_cert_expiry_seconds` (negative once expired).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hbone::WorkloadCertificate;
use hbone::cert::certificate_validity;
use prometheus_registry::text;

use hbone::cert::serial_hex;

/// Gauge: when the identity's current certificate expires, seconds since the epoch.
pub const EXPIRATION: &str = "certificate_expiration_timestamp_seconds";
/// Gauge: when the identity's current certificate became valid, seconds since the epoch; with
/// [`EXPIRATION`], its lifetime.
pub const ISSUED: &str = "certificate_issued_timestamp_seconds";
/// Gauge: seconds until the identity's current certificate expires (negative once expired).
pub const EXPIRY: &str = "certificate_expiry_seconds";
/// Gauge: when each root of the trust bundle expires, seconds since the epoch.
pub const ROOT_EXPIRATION: &str = "trust_bundle_root_expiration_timestamp_seconds";
/// Counter: certificate requests to the CA, by `result` (`success`, `failure`).
pub const REQUESTS: &str = "certificate_requests_total";

/// Certificate requests by result, counted by the identities' workers.
#[derive(Default)]
pub(super) struct Requests {
    success: AtomicU64,
    failure: AtomicU64,
}

impl Requests {
    /// One request ended, issued or not.
    pub(super) fn count(&self, issued: bool) {
        let counter = if issued { &self.success } else { &self.failure };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes the families for `certs` (each identity held with its current certificate, sorted)
/// as of `now`.
pub(super) fn render(
    out: &mut String,
    component: &str,
    certs: &[(String, Option<std::sync::Arc<WorkloadCertificate>>)],
    requests: &Requests,
    now: SystemTime,
) {
    let name = |family: &str| format!("{component}_{family}");
    type At = fn(&WorkloadCertificate) -> SystemTime;
    let instants: [(&str, &str, At); 2] = [
        (
            EXPIRATION,
            "When the identity's current certificate expires, in seconds since the epoch.",
            |cert| cert.expires_at(),
        ),
        (
            ISSUED,
            "When the identity's current certificate became valid, in seconds since the epoch.",
            |cert| cert.not_before(),
        ),
    ];
    for (family, help, at) in instants {
        let family = name(family);
        text::family(out, &family, help, "gauge");
        for (identity, cert) in certs {
            if let Some(cert) = cert {
                let labels = text::render_labels(&[("identity", identity, "")]);
                let _ = writeln!(out, "{family}{labels} {}", epoch(at(cert)));
            }
        }
    }
    let expiry = name(EXPIRY);
    text::family(
        out,
        &expiry,
        "Seconds until the identity's current certificate expires; negative once expired.",
        "gauge",
    );
    let now_epoch = epoch(now);
    for (identity, cert) in certs {
        if let Some(cert) = cert {
            let labels = text::render_labels(&[("identity", identity, "")]);
            let left = epoch(cert.expires_at()) - now_epoch;
            let _ = writeln!(out, "{expiry}{labels} {left}");
        }
    }
    render_roots(out, &name(ROOT_EXPIRATION), certs);
    let requests_name = name(REQUESTS);
    text::family(
        out,
        &requests_name,
        "Certificate requests to the CA, by result.",
        "counter",
    );
    for (result, counter) in [
        ("success", &requests.success),
        ("failure", &requests.failure),
    ] {
        let labels = text::render_labels(&[("result", result, "")]);
        let n = counter.load(Ordering::Relaxed);
        let _ = writeln!(out, "{requests_name}{labels} {n}");
    }
}

/// The roots every held certificate was issued with, once each, by serial number.
fn render_roots(
    out: &mut String,
    family: &str,
    certs: &[(String, Option<std::sync::Arc<WorkloadCertificate>>)],
) {
    let mut roots = BTreeMap::new();
    for cert in certs.iter().filter_map(|(_, cert)| cert.as_ref()) {
        for root in cert.roots() {
            if let (Some(serial), Ok((_, not_after))) =
                (serial_hex(root.as_ref()), certificate_validity(root))
            {
                roots.insert(serial, epoch(not_after));
            }
        }
    }
    text::family(
        out,
        family,
        "When each root of the trust bundle expires, in seconds since the epoch.",
        "gauge",
    );
    for (serial, not_after) in roots {
        let labels = text::render_labels(&[("serial", &serial, "")]);
        let _ = writeln!(out, "{family}{labels} {not_after}");
    }
}

/// Seconds since the epoch, negative before it.
fn epoch(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
