//! Istio's `istio_tcp_*` labels of a connection, filled from the workloads and service
//! involved; "unknown" where nothing is known, as Istio reports it.

use hbone::Identity;

use crate::state::{Service, Workload};
use crate::telemetry::{ConnectionLabels, Reporter};

/// Label value for anything not known.
const UNKNOWN: &str = "unknown";

/// Value of `connection_security_policy` for HBONE.
pub const MUTUAL_TLS: &str = "mutual_tls";
/// Value of `connection_security_policy` for plaintext: Istio's ztunnel reports "unknown".
pub const PLAINTEXT: &str = "unknown";
/// `response_flags` of a connection that had no failure.
pub const NO_FLAGS: &str = "-";
/// `response_flags` of a connection refused by authorization.
pub const DENIED: &str = "DENY";
/// `response_flags` of a connection whose upstream could not be reached.
pub const CONNECT_FAILED: &str = "CONNECT";

/// One end of a connection, as far as it is known.
#[derive(Clone, Copy, Default)]
pub struct Peer<'a> {
    /// The workload, if known.
    pub workload: Option<&'a Workload>,
    /// Its identity, if known (verified by TLS, or our own pod's).
    pub identity: Option<&'a Identity>,
}

fn or_unknown(value: &str) -> String {
    if value.is_empty() {
        UNKNOWN.to_owned()
    } else {
        value.to_owned()
    }
}

fn principal(peer: &Peer<'_>) -> String {
    peer.identity
        .map(ToString::to_string)
        .unwrap_or_else(|| UNKNOWN.to_owned())
}

/// The labels of a connection seen by `reporter`.
pub fn connection_labels(
    reporter: Reporter,
    source: Peer<'_>,
    destination: Peer<'_>,
    service: Option<&Service>,
    mtls: bool,
) -> ConnectionLabels {
    let field = |w: Option<&Workload>, f: fn(&Workload) -> &str| {
        w.map(|w| or_unknown(f(w)))
            .unwrap_or_else(|| UNKNOWN.to_owned())
    };
    let (src, dst) = (source.workload, destination.workload);
    ConnectionLabels {
        reporter: Some(reporter),
        source_workload: field(src, |w| &w.workload_name),
        source_workload_namespace: field(src, |w| &w.namespace),
        source_principal: principal(&source),
        source_app: field(src, |w| &w.canonical_name),
        source_version: field(src, |w| &w.canonical_revision),
        source_cluster: field(src, |w| &w.cluster_id),
        destination_workload: field(dst, |w| &w.workload_name),
        destination_workload_namespace: field(dst, |w| &w.namespace),
        destination_principal: principal(&destination),
        destination_app: field(dst, |w| &w.canonical_name),
        destination_version: field(dst, |w| &w.canonical_revision),
        destination_cluster: field(dst, |w| &w.cluster_id),
        destination_service: service
            .map(|s| or_unknown(&s.hostname))
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        destination_service_name: service
            .map(|s| or_unknown(&s.name))
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        destination_service_namespace: service
            .map(|s| or_unknown(&s.namespace))
            .unwrap_or_else(|| UNKNOWN.to_owned()),
        connection_security_policy: if mtls { MUTUAL_TLS } else { PLAINTEXT }.to_owned(),
        response_flags: NO_FLAGS.to_owned(),
    }
}

/// The service a connection to `workload` on `port` most likely addressed, when the
/// connection itself does not say (inbound): the first service of the workload exposing
/// that target port.
pub fn guess_service<'a>(
    workload: &Workload,
    port: u16,
    lookup: impl Fn(&str, &str) -> Option<std::sync::Arc<Service>> + 'a,
) -> Option<std::sync::Arc<Service>> {
    workload
        .services
        .iter()
        .filter(|(_, ports)| ports.values().any(|target| *target == port))
        .find_map(|(key, _)| {
            let (namespace, hostname) = key.split_once('/')?;
            lookup(namespace, hostname)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TunnelProtocol;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn workload() -> Workload {
        Workload {
            uid: "Kubernetes//Pod/shop/cart-1".into(),
            name: "cart-1".into(),
            namespace: "shop".into(),
            addresses: vec!["10.244.1.5".parse().unwrap()],
            protocol: TunnelProtocol::Hbone,
            trust_domain: "cluster.local".into(),
            service_account: "cart".into(),
            node: "node1".into(),
            waypoint: None,
            canonical_name: "cart".into(),
            canonical_revision: "v1".into(),
            workload_name: "cart".into(),
            cluster_id: "Kubernetes".into(),
            healthy: true,
            services: BTreeMap::from([(
                "shop/cart.shop.svc.cluster.local".to_string(),
                BTreeMap::from([(80, 8080)]),
            )]),
            ..Workload::default()
        }
    }

    #[test]
    fn labels_from_both_ends() {
        let w = workload();
        let id: Identity = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        let labels = connection_labels(
            Reporter::Destination,
            Peer::default(),
            Peer {
                workload: Some(&w),
                identity: Some(&id),
            },
            None,
            true,
        );
        assert_eq!(labels.reporter, Some(Reporter::Destination));
        assert_eq!(labels.source_workload, "unknown");
        assert_eq!(labels.source_principal, "unknown");
        assert_eq!(labels.destination_workload, "cart");
        assert_eq!(labels.destination_app, "cart");
        assert_eq!(labels.destination_version, "v1");
        assert_eq!(
            labels.destination_principal,
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        assert_eq!(labels.destination_service, "unknown");
        assert_eq!(labels.connection_security_policy, "mutual_tls");
        assert_eq!(labels.response_flags, "-");
    }

    #[test]
    fn guesses_the_service_by_target_port() {
        let w = workload();
        let svc = Arc::new(Service {
            name: "cart".into(),
            namespace: "shop".into(),
            hostname: "cart.shop.svc.cluster.local".into(),
            vips: vec![],
            ports: BTreeMap::from([(80, 8080)]),
            ..Service::default()
        });
        let lookup = |ns: &str, host: &str| {
            (ns == "shop" && host == "cart.shop.svc.cluster.local").then(|| svc.clone())
        };
        assert_eq!(guess_service(&w, 8080, lookup).unwrap().name, "cart");
        assert!(guess_service(&w, 9090, lookup).is_none());
    }
}
