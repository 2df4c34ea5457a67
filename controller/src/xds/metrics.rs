//! Names of the xDS server's metrics (rendered on the admin port's `/metrics`).

/// Gauge: xDS streams currently open.
pub const CONNECTED_CLIENTS: &str = "controller_xds_connected_clients";
/// Counter: responses sent, labelled by `type_url`.
pub const PUSHES: &str = "controller_xds_pushes_total";
/// Histogram: seconds from noticing a snapshot change (or a request) to the response being
/// queued for the client, debounce included.
pub const PUSH_SECONDS: &str = "controller_xds_push_duration_seconds";
/// Counter: responses a client rejected, labelled by `type_url`.
pub const NACKS: &str = "controller_xds_nacks_total";

/// Registers descriptions, so `/metrics` carries `# HELP` lines, and publishes the gauge.
pub fn describe() {
    metrics::describe_gauge!(CONNECTED_CLIENTS, "xDS streams currently open");
    metrics::describe_counter!(PUSHES, "delta xDS responses sent");
    metrics::describe_histogram!(
        PUSH_SECONDS,
        metrics::Unit::Seconds,
        "time from a config change to its push being queued, debounce included"
    );
    metrics::describe_counter!(NACKS, "delta xDS responses rejected by clients");
    // Publish zeros so dashboards see the series before the first event.
    metrics::gauge!(CONNECTED_CLIENTS).set(0.0);
}
