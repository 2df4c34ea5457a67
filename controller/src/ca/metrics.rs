//! Names of the CA's metrics (rendered on the admin port's `/metrics`).

/// Counter: certificates issued.
pub const ISSUED: &str = "controller_ca_certificates_issued_total";
/// Counter: certificate requests refused, labelled by `reason`.
pub const REFUSED: &str = "controller_ca_certificates_refused_total";

/// Registers descriptions, so `/metrics` carries `# HELP` lines.
pub fn describe() {
    metrics::describe_counter!(ISSUED, "workload certificates issued");
    metrics::describe_counter!(REFUSED, "certificate requests refused");
    // Publish zero so dashboards see the series before the first certificate.
    metrics::counter!(ISSUED).absolute(0);
}
