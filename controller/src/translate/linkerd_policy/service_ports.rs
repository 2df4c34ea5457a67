//! The ports a request for a pod's port arrives on at a waypoint: the pod's own (a request to
//! the pod's address) and the ports of the Services selecting the pod that target it.

use std::collections::BTreeSet;

use crate::model::{Index, IntOrString, Pod};
use crate::translate::labels::selects;

/// The ports a request to `pod` arrives on at a waypoint when it is for the pod's `ports`:
/// those, and the ports of the Services selecting the pod that target them.
pub(super) fn destination_ports(index: &Index, pod: &Pod, ports: &[u16]) -> Vec<u16> {
    let named = |name: &str| {
        pod.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name == name)
            .map(|p| p.container_port)
    };
    let mut out: BTreeSet<u16> = ports.iter().copied().collect();
    for (_, svc) in index.services() {
        let selected = svc.metadata.namespace == pod.metadata.namespace
            && svc
                .spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.is_empty() && selects(s, &pod.metadata.labels));
        if !selected {
            continue;
        }
        for p in &svc.spec.ports {
            let target = match &p.target_port {
                None => Some(p.port),
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(name)) => named(name),
            };
            if target.is_some_and(|t| ports.contains(&t)) {
                out.insert(p.port);
            }
        }
    }
    out.into_iter().collect()
}
