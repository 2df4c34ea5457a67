//! `meshctl proxy-status`: for every proxy, whether it is connected to the controller and, per
//! xDS type, whether the version it ACKed is the controller's current one (as `istioctl
//! proxy-status` shows), from the controller's `/debug/syncz`; and when its first workload
//! certificate expires, from its own config dump.

use serde::Serialize;
use serde_json::Value;

use super::table::table;

/// The xDS types shown, with their column names.
/// The trust bundle's column says whether a proxy has loaded the roots served (what a root
/// rotation waits for); the access log column, whether a ztunnel follows Telemetry's
/// access logging switches.
pub const TYPES: [(&str, &str); 5] = [
    (api::ADDRESS_TYPE_URL, "ADDRESSES"),
    (api::AUTHORIZATION_TYPE_URL, "AUTHORIZATION"),
    (api::WAYPOINT_TYPE_URL, "WAYPOINT"),
    (api::TRUST_BUNDLE_TYPE_URL, "TRUST_BUNDLE"),
    (api::ACCESS_LOGGING_TYPE_URL, "ACCESS_LOG"),
];

/// Which proxy: how the controller will name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// `ztunnel node1`, `waypoint shop/waypoint-...`.
    pub name: String,
    /// `<role>~<pod>.<namespace>`: its xDS node ID without the IP.
    pub key: String,
}

/// One proxy's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The proxy.
    pub name: String,
    /// Whether it holds a stream to the controller.
    pub connected: bool,
    /// Per column of [`TYPES`]: `SYNCED`, `STALE`, `NACK: <error>` or `-` (not subscribed).
    pub types: Vec<String>,
    /// When its first workload certificate expires (RFC 3339), if it holds one.
    pub cert_expires: Option<String>,
}

impl Status {
    /// Whether anything is wrong: not connected, or a NACK.
    pub fn failing(&self) -> bool {
        !self.connected || self.types.iter().any(|t| t.starts_with("NACK"))
    }
}

/// The status of each expected proxy from `syncz` (`{versions, clients}`), with `dumps` the
/// proxies' config dumps (`None` when unreadable), in the same order.
pub fn statuses(expected: &[Expected], syncz: &Value, dumps: &[Option<Value>]) -> Vec<Status> {
    let clients = syncz["clients"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    expected
        .iter()
        .zip(dumps)
        .map(|(proxy, dump)| {
            let client = clients
                .iter()
                .find(|c| key_of(c["node"].as_str().unwrap_or_default()) == proxy.key);
            let types = TYPES
                .iter()
                .map(|(type_url, _)| match client {
                    Some(client) => {
                        type_status(&client["types"][*type_url], &syncz["versions"][*type_url])
                    }
                    None => "-".to_owned(),
                })
                .collect();
            Status {
                name: proxy.name.clone(),
                connected: client.is_some(),
                types,
                cert_expires: dump.as_ref().and_then(first_expiry),
            }
        })
        .collect()
}

/// `<role>~<pod>.<ns>` of an Istio node ID (`<role>~<ip>~<pod>.<ns>~<domain>`): the node
/// agent of a node names the same pod as its ztunnel, with another role.
fn key_of(node: &str) -> String {
    let mut parts = node.split('~');
    let role = parts.next().unwrap_or_default();
    let pod = parts.nth(1).unwrap_or_default();
    format!("{role}~{pod}")
}

/// How one type stands: NACKed, or its ACKed version against the current one.
fn type_status(state: &Value, current: &Value) -> String {
    if state.is_null() {
        return "-".to_owned();
    }
    if let Some(error) = state["nacked"].as_str() {
        return format!("NACK: {error}");
    }
    match (state["acked"].as_str(), current.as_str()) {
        (Some(acked), Some(current)) if acked == current => "SYNCED".to_owned(),
        _ => "STALE".to_owned(),
    }
}

/// The earliest expiry among the certificates of a config dump.
fn first_expiry(dump: &Value) -> Option<String> {
    super::dump_certificates::certificates(dump)
        .iter()
        .filter_map(|c| c["certificate"]["not_after"].as_str())
        // RFC 3339 in UTC sorts as text.
        .min()
        .map(str::to_owned)
}

/// `proxy-status`' table, as `istioctl proxy-status` prints it.
pub fn status_table(statuses: &[Status]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                if s.connected { "yes" } else { "NO" }.to_owned(),
            ];
            row.extend(s.types.iter().cloned());
            row.push(s.cert_expires.clone().unwrap_or_else(|| "-".to_owned()));
            row
        })
        .collect();
    let mut header = vec!["NAME", "CONNECTED"];
    header.extend(TYPES.iter().map(|(_, column)| *column));
    header.push("CERT_EXPIRES");
    table(&header, &rows)
}

/// Prints `found` as the table (or JSON); returns the exit status: 1 when a proxy is
/// disconnected or has NACKed its config.
pub fn print(found: &[Status], json: bool) -> i32 {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(found).unwrap_or_default()
        );
    } else {
        print!("{}", status_table(found));
    }
    i32::from(found.iter().any(Status::failing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_proxy_reads_connected_synced_stale_or_nacked() {
        let syncz = serde_json::json!({
            "versions": {
                (api::ADDRESS_TYPE_URL): "v2",
                (api::AUTHORIZATION_TYPE_URL): "a1",
                (api::TRUST_BUNDLE_TYPE_URL): "b2"
            },
            "clients": [{
                "node": "ztunnel~127.0.0.1~ztunnel-node1.istio-system~istio-system.svc.cluster.local",
                "types": {
                    (api::ADDRESS_TYPE_URL): {"sent": "v2", "acked": "v2", "nacked": null},
                    (api::AUTHORIZATION_TYPE_URL): {"sent": "a1", "acked": "a0", "nacked": null},
                    (api::TRUST_BUNDLE_TYPE_URL): {"sent": "b2", "acked": "b2", "nacked": null}
                }
            }, {
                "node": "node-agent~0.0.0.0~ztunnel-node2.istio-system~istio-system.svc.cluster.local",
                "types": {(api::ADDRESS_TYPE_URL): {"sent": "v2", "acked": "v2", "nacked": null}}
            }, {
                "node": "router~10.244.1.4~waypoint-x.shop~shop.svc.cluster.local",
                "types": {
                    (api::WAYPOINT_TYPE_URL): {"sent": "w1", "acked": null, "nacked": "bad route"}
                }
            }]
        });
        let expected = [
            Expected {
                name: "ztunnel node1".into(),
                key: "ztunnel~ztunnel-node1.istio-system".into(),
            },
            Expected {
                name: "ztunnel node2".into(),
                key: "ztunnel~ztunnel-node2.istio-system".into(),
            },
            Expected {
                name: "waypoint shop/waypoint-x".into(),
                key: "router~waypoint-x.shop".into(),
            },
        ];
        let dump = serde_json::json!({"certificates": [
            {"certificate": {"not_after": "2026-12-08T00:00:00Z"}},
            {"certificate": {"not_after": "2026-12-07T00:00:00Z"}},
            {"certificate": null}
        ]});
        let found = statuses(&expected, &syncz, &[Some(dump), None, None]);
        assert_eq!(found[0].types, ["SYNCED", "STALE", "-", "SYNCED", "-"]);
        assert_eq!(
            found[0].cert_expires.as_deref(),
            Some("2026-12-07T00:00:00Z")
        );
        assert!(!found[0].failing());
        assert!(!found[1].connected && found[1].failing());
        assert_eq!(found[1].types, ["-", "-", "-", "-", "-"]);
        assert_eq!(found[2].types, ["-", "-", "NACK: bad route", "-", "-"]);
        assert!(found[2].failing());
    }
}
