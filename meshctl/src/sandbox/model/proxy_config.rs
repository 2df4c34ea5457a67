//! `meshctl proxy-config`: what one proxy holds, read from its config dump, as tables like
//! `istioctl ztunnel-config` prints them.

use serde_json::Value;

/// A part of a proxy's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The workloads it knows.
    Workloads,
    /// The services it knows.
    Services,
    /// The authorization policies it enforces.
    Policies,
    /// The workload certificates it holds.
    Certs,
}

impl Section {
    /// Parses `workloads`, `services`, `policies` or `certs` (and their short forms).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "workloads" | "workload" | "wl" => Ok(Self::Workloads),
            "services" | "service" | "svc" => Ok(Self::Services),
            "policies" | "policy" | "authorization" => Ok(Self::Policies),
            "certs" | "certificates" | "secret" => Ok(Self::Certs),
            other => Err(format!(
                "{other}: use workloads, services, policies or certs"
            )),
        }
    }

    /// The section of the dump as it is.
    pub fn of(self, dump: &Value) -> Value {
        match self {
            Self::Workloads => dump["config"]["workloads"].clone(),
            Self::Services => dump["config"]["services"].clone(),
            Self::Policies => dump["config"]["policies"].clone(),
            Self::Certs => dump["certificates"].clone(),
        }
    }

    /// The section as a header and rows.
    pub fn table(self, dump: &Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
        let items = self.of(dump);
        let items = items.as_array().map(Vec::as_slice).unwrap_or_default();
        match self {
            Self::Workloads => (
                vec![
                    "NAMESPACE",
                    "NAME",
                    "ADDRESS",
                    "NODE",
                    "WAYPOINT",
                    "PROTOCOL",
                ],
                items.iter().map(workload_row).collect(),
            ),
            Self::Services => (
                vec!["NAMESPACE", "NAME", "VIPS", "PORTS", "WAYPOINT"],
                items.iter().map(service_row).collect(),
            ),
            Self::Policies => (
                vec!["NAMESPACE", "NAME", "ACTION", "SCOPE", "RULES", "DRY_RUN"],
                items.iter().map(policy_row).collect(),
            ),
            Self::Certs => (
                vec!["IDENTITY", "STATE", "NOT_BEFORE", "NOT_AFTER", "SERIAL"],
                items.iter().map(cert_row).collect(),
            ),
        }
    }
}

/// A string field, `-` when absent or empty.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => "-".to_owned(),
    }
}

/// A list of strings joined with commas, `-` when empty.
fn list(value: &Value) -> String {
    let items: Vec<String> = value.as_array().into_iter().flatten().map(text).collect();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// Where a workload's or service's waypoint is: its hostname, or its address.
fn waypoint(value: &Value) -> String {
    let target = &value["target"];
    if let Some(host) = target["Hostname"]["hostname"].as_str() {
        return host.to_owned();
    }
    match &target["Address"] {
        Value::Null => "None".to_owned(),
        address => address.to_string(),
    }
}

fn workload_row(w: &Value) -> Vec<String> {
    vec![
        text(&w["namespace"]),
        text(&w["name"]),
        list(&w["addresses"]),
        text(&w["node"]),
        waypoint(&w["waypoint"]),
        text(&w["protocol"]),
    ]
}

fn service_row(s: &Value) -> Vec<String> {
    let ports: Vec<String> = s["ports"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(port, target)| match target.as_u64() {
            Some(0) | None => port.clone(),
            Some(target) => format!("{port}→{target}"),
        })
        .collect();
    vec![
        text(&s["namespace"]),
        text(&s["name"]),
        list(&s["vips"]),
        if ports.is_empty() {
            "-".to_owned()
        } else {
            ports.join(",")
        },
        waypoint(&s["waypoint"]),
    ]
}

fn policy_row(p: &Value) -> Vec<String> {
    let rules = p["rules"].as_array().map_or(0, Vec::len);
    vec![
        text(&p["namespace"]),
        text(&p["name"]),
        text(&p["action"]),
        text(&p["scope"]),
        rules.to_string(),
        text(&p["dry_run"]),
    ]
}

fn cert_row(c: &Value) -> Vec<String> {
    let cert = &c["certificate"];
    vec![
        text(&c["identity"]),
        text(&c["state"]),
        text(&cert["not_before"]),
        text(&cert["not_after"]),
        text(&cert["serial_number"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump() -> Value {
        serde_json::json!({
            "config": {
                "workloads": [{
                    "namespace": "shop", "name": "orders-1", "addresses": ["10.244.1.2"],
                    "node": "node1", "protocol": "Hbone",
                    "waypoint": {"hbone_port": 15008, "target": {"Hostname": {
                        "hostname": "waypoint.shop.svc.cluster.local", "namespace": "shop"}}}
                }, {
                    "namespace": "default", "name": "client", "addresses": [],
                    "node": "node2", "protocol": "None", "waypoint": null
                }],
                "services": [{
                    "namespace": "shop", "name": "orders", "vips": ["10.96.0.11"],
                    "ports": {"80": 8080, "9090": 0}, "waypoint": null
                }],
                "policies": [{
                    "namespace": "shop", "name": "deny", "action": "Deny",
                    "scope": "WorkloadSelector", "rules": [[], []], "dry_run": false
                }]
            },
            "certificates": [{
                "identity": "spiffe://cluster.local/ns/shop/sa/orders", "state": "available",
                "certificate": {"not_before": "2026-12-06T00:00:00Z",
                                "not_after": "2026-12-07T00:00:00Z", "serial_number": "1f"}
            }, {
                "identity": "spiffe://cluster.local/ns/shop/sa/new", "state": "pending",
                "certificate": null
            }]
        })
    }

    #[test]
    fn each_section_reads_as_rows() {
        let d = dump();
        let (header, rows) = Section::Workloads.table(&d);
        assert_eq!(header[4], "WAYPOINT");
        assert_eq!(
            rows,
            [
                [
                    "shop",
                    "orders-1",
                    "10.244.1.2",
                    "node1",
                    "waypoint.shop.svc.cluster.local",
                    "Hbone"
                ],
                ["default", "client", "-", "node2", "None", "None"],
            ]
        );
        let (_, rows) = Section::Services.table(&d);
        assert_eq!(
            rows,
            [["shop", "orders", "10.96.0.11", "80→8080,9090", "None"]]
        );
        let (_, rows) = Section::Policies.table(&d);
        assert_eq!(
            rows,
            [["shop", "deny", "Deny", "WorkloadSelector", "2", "false"]]
        );
        let (_, rows) = Section::Certs.table(&d);
        assert_eq!(
            rows[0][1..],
            [
                "available",
                "2026-12-06T00:00:00Z",
                "2026-12-07T00:00:00Z",
                "1f"
            ]
        );
        assert_eq!(rows[1][1..], ["pending", "-", "-", "-"]);
        assert_eq!(Section::Policies.of(&d).as_array().unwrap().len(), 1);
    }

    #[test]
    fn sections_read_their_names() {
        assert_eq!(Section::parse("svc"), Ok(Section::Services));
        assert_eq!(Section::parse("certs"), Ok(Section::Certs));
        assert!(
            Section::parse("routes")
                .unwrap_err()
                .contains("use workloads")
        );
    }
}
