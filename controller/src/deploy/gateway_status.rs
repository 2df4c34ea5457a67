//! The status of a waypoint Gateway, as Istio writes it: `Accepted`, and `Programmed` once the
//! waypoint's Service has an address, which `status.addresses` then lists (what
//! `kubectl get gateway` shows under ADDRESS).

use std::net::IpAddr;

use serde_json::{Value, json};

use super::waypoints::{HBONE_PORT, WaypointGateway};
use crate::model::Service;

/// The `status` to write on `gateway`, given its waypoint Service (if it exists yet). `now`
/// (RFC 3339) stamps the conditions' `lastTransitionTime`.
pub fn desired(gateway: &WaypointGateway, service: Option<&Service>, now: &str) -> Value {
    let addresses = service.map(service_addresses).unwrap_or_default();
    let host = gateway.service_host();
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "observedGeneration": gateway.generation,
            "lastTransitionTime": now,
        })
    };
    let programmed = if addresses.is_empty() {
        condition(
            "Programmed",
            false,
            "AddressNotUsable",
            format!("Failed to assign to any requested addresses: hostname {host:?} not found"),
        )
    } else {
        condition(
            "Programmed",
            true,
            "Programmed",
            format!("Resource programmed, assigned to service(s) {host}:{HBONE_PORT}"),
        )
    };
    let listeners: Vec<Value> = gateway
        .listeners
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "attachedRoutes": 0,
                "supportedKinds": [],
                "conditions": [
                    condition("Accepted", true, "Accepted", "No errors found".into()),
                    condition("Programmed", true, "Programmed", "No errors found".into()),
                    condition("ResolvedRefs", true, "ResolvedRefs", "No errors found".into()),
                ],
            })
        })
        .collect();
    json!({
        "addresses": addresses
            .iter()
            .map(|ip| json!({"type": "IPAddress", "value": ip}))
            .collect::<Vec<_>>(),
        "conditions": [
            condition("Accepted", true, "Accepted", "Resource accepted".into()),
            programmed,
        ],
        "listeners": listeners,
    })
}

/// The Service's cluster IPs (all families), none for a headless Service (`None` is no IP).
fn service_addresses(service: &Service) -> Vec<String> {
    service
        .spec
        .cluster_ip_list()
        .iter()
        .filter(|ip| ip.parse::<IpAddr>().is_ok())
        .cloned()
        .collect()
}

/// `status` without the parts that change on every write (`lastTransitionTime`): two
/// statuses equal under this are the same status.
pub fn comparable(status: &Value) -> Value {
    let mut status = status.clone();
    strip_times(&mut status);
    status
}

fn strip_times(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("lastTransitionTime");
            map.values_mut().for_each(strip_times);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> WaypointGateway {
        WaypointGateway {
            namespace: "shop".into(),
            name: "waypoint".into(),
            generation: 2,
            listeners: vec!["mesh".into()],
            ..WaypointGateway::default()
        }
    }

    fn service(ip: &str) -> Service {
        serde_json::from_value(json!({"spec": {"clusterIP": ip}})).expect("service")
    }

    #[test]
    fn programmed_once_the_service_has_an_address() {
        let waiting = desired(&gateway(), None, "t0");
        assert_eq!(waiting["addresses"], json!([]));
        assert_eq!(waiting["conditions"][0]["type"], "Accepted");
        assert_eq!(waiting["conditions"][0]["status"], "True");
        assert_eq!(waiting["conditions"][1]["status"], "False");
        assert_eq!(waiting["conditions"][1]["reason"], "AddressNotUsable");
        assert_eq!(waiting["conditions"][1]["observedGeneration"], 2);

        let headless = desired(&gateway(), Some(&service("None")), "t0");
        assert_eq!(headless["conditions"][1]["status"], "False");

        let ready = desired(&gateway(), Some(&service("10.96.0.12")), "t1");
        assert_eq!(
            ready["addresses"],
            json!([{"type": "IPAddress", "value": "10.96.0.12"}])
        );
        assert_eq!(ready["conditions"][1]["status"], "True");
        assert_eq!(
            ready["conditions"][1]["message"],
            "Resource programmed, assigned to service(s) waypoint.shop.svc.cluster.local:15008"
        );
        assert_eq!(ready["listeners"][0]["name"], "mesh");

        let dual: Service = serde_json::from_value(json!({"spec": {
            "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12", "fd00:10:96::c"]}}))
        .expect("service");
        assert_eq!(
            desired(&gateway(), Some(&dual), "t1")["addresses"],
            json!([{"type": "IPAddress", "value": "10.96.0.12"},
                   {"type": "IPAddress", "value": "fd00:10:96::c"}])
        );
        assert_eq!(ready["listeners"][0]["conditions"][0]["status"], "True");
    }

    #[test]
    fn only_transition_times_are_ignored_when_comparing() {
        let a = desired(&gateway(), Some(&service("10.96.0.12")), "t1");
        let b = desired(&gateway(), Some(&service("10.96.0.12")), "t2");
        assert_ne!(a, b);
        assert_eq!(comparable(&a), comparable(&b));
        let c = desired(&gateway(), Some(&service("10.96.0.13")), "t1");
        assert_ne!(comparable(&a), comparable(&c));
    }
}
