//! The connection events a ztunnel publishes on its tap (`kind` = `connection`): one when a
//! connection opens and one when it closes, or a single `deny` verdict when authorization
//! refuses it. Built only inside the tap's `publish`, so nobody tapping costs nothing more.

use std::net::SocketAddr;
use std::time::Duration;

use proxy_core::labels::MUTUAL_TLS;
use proxy_core::tap::{CONNECTION, TapEvent};
use proxy_core::telemetry::{ConnectionLabels, Reporter};

/// `verdict` of a connection authorization let through.
pub(crate) const ALLOW: &str = "allow";
/// `verdict` of a connection authorization refused.
pub(crate) const DENY: &str = "deny";

/// Where and how a connection went, as its labels and addresses say.
pub(crate) struct Seen<'a> {
    pub(crate) labels: &'a ConnectionLabels,
    pub(crate) source: SocketAddr,
    pub(crate) destination: SocketAddr,
}

/// What a closed connection carried.
pub(crate) struct Carried {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) duration: Duration,
}

/// The event of `seen` in `phase`; `verdict` where this ztunnel authorized it; `carried` on
/// close. Labels' "unknown" becomes empty, which the event's line leaves out.
pub(crate) fn event(
    seen: &Seen<'_>,
    phase: &'static str,
    verdict: &'static str,
    carried: Option<&Carried>,
) -> TapEvent {
    let labels = seen.labels;
    let known = |value: &str| match value {
        "unknown" => String::new(),
        value => value.to_owned(),
    };
    let inbound = labels.reporter == Some(Reporter::Destination);
    TapEvent {
        kind: CONNECTION,
        phase,
        direction: if inbound { "inbound" } else { "outbound" },
        source_identity: known(&labels.source_principal),
        source_workload: known(&labels.source_workload),
        source_namespace: known(&labels.source_workload_namespace),
        source_address: seen.source.to_string(),
        destination_identity: known(&labels.destination_principal),
        destination_service: known(&labels.destination_service_name),
        destination_workload: known(&labels.destination_workload),
        destination_namespace: known(&labels.destination_workload_namespace),
        destination_address: seen.destination.to_string(),
        mtls: labels.connection_security_policy == MUTUAL_TLS,
        verdict,
        bytes_sent: carried.map_or(0, |c| c.sent),
        bytes_received: carried.map_or(0, |c| c.received),
        duration_ms: carried.map_or(0.0, |c| c.duration.as_secs_f64() * 1000.0),
        response_flags: labels.response_flags.clone(),
        ..TapEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_core::tap::{CLOSE, OPEN};

    fn labels(reporter: Reporter) -> ConnectionLabels {
        ConnectionLabels {
            reporter: Some(reporter),
            source_workload: "client".into(),
            source_workload_namespace: "mesh".into(),
            source_principal: "spiffe://cluster.local/ns/mesh/sa/client".into(),
            destination_workload: "server".into(),
            destination_workload_namespace: "mesh".into(),
            destination_principal: "spiffe://cluster.local/ns/mesh/sa/default".into(),
            destination_service_name: "unknown".into(),
            connection_security_policy: MUTUAL_TLS.into(),
            response_flags: "-".into(),
            ..ConnectionLabels::default()
        }
    }

    #[test]
    fn events_carry_both_identities_direction_and_counts_on_close() {
        let labels = labels(Reporter::Destination);
        let seen = Seen {
            labels: &labels,
            source: "10.0.0.1:4000".parse().unwrap(),
            destination: "10.0.0.2:8080".parse().unwrap(),
        };
        let open = event(&seen, OPEN, ALLOW, None);
        assert_eq!(open.kind, CONNECTION);
        assert_eq!(open.direction, "inbound");
        assert_eq!(open.verdict, ALLOW);
        assert!(open.mtls);
        assert_eq!(open.destination_service, "", "unknown is left out");
        assert_eq!(open.source_address, "10.0.0.1:4000");
        let carried = Carried {
            sent: 5,
            received: 7,
            duration: Duration::from_millis(3),
        };
        let closed = event(&seen, CLOSE, ALLOW, Some(&carried));
        assert_eq!((closed.bytes_sent, closed.bytes_received), (5, 7));
        assert_eq!(closed.duration_ms, 3.0);
        let outbound = labels_event(Reporter::Source);
        assert_eq!(outbound.direction, "outbound");
    }

    fn labels_event(reporter: Reporter) -> TapEvent {
        let labels = labels(reporter);
        let seen = Seen {
            labels: &labels,
            source: "10.0.0.1:4000".parse().unwrap(),
            destination: "10.0.0.2:8080".parse().unwrap(),
        };
        event(&seen, OPEN, "", None)
    }
}
