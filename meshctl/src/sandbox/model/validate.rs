//! Validation of the kinds the sandbox acts on, beyond what their types
//! enforce. Messages start with the field path (`spec.ports[0].port: ...`).

use super::addresses::{MAX_NODES, PODS_PER_NODE, SERVICE_CIDR, in_service_range};
use super::objects::{DeploymentObject, PodSpec, ServiceSpec};

/// DNS-1123 names: a label (namespaces, services) or a subdomain.
pub fn validate_name(name: &str, label: bool) -> Result<(), String> {
    let max = if label { 63 } else { 253 };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let ok_chars = name.chars().all(|c| allowed(c) || (!label && c == '.'));
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > max || !ok_chars || !ok_ends {
        let dot = if label { "" } else { ", '.'" };
        return Err(format!(
            "invalid name {name:?}: at most {max} lower case alphanumeric characters, '-'{dot}, \
             starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// The downward-API fields the sandbox can fill in.
pub fn supported_field_path(path: &str) -> bool {
    const PLAIN: &[&str] = &[
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "status.podIP",
        "status.podIPs",
        "status.hostIP",
        "spec.nodeName",
        "spec.serviceAccountName",
    ];
    PLAIN.contains(&path)
        || parse_map_field(path, "metadata.labels").is_some()
        || parse_map_field(path, "metadata.annotations").is_some()
}

/// `metadata.labels['version']` → `version`.
pub fn parse_map_field<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

/// A pod spec (`at` is its field path): containers with unique names,
/// supported downward-API env fields, valid ports, security settings the
/// sandbox can honour.
pub fn validate_pod_spec(spec: &PodSpec, at: &str) -> Result<(), String> {
    if spec.containers.is_empty() {
        return Err(format!(
            "{at}.containers: at least one container is required"
        ));
    }
    let mut names = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let here = format!("{at}.containers[{i}]");
        if c.name.is_empty() {
            return Err(format!("{here}.name: required field is missing"));
        }
        if names.contains(&&c.name) {
            return Err(format!(
                "{here}.name: duplicate container name {:?}",
                c.name
            ));
        }
        names.push(&c.name);
        for (j, e) in c.env.iter().enumerate() {
            let here = format!("{here}.env[{j}]");
            if let Some(from) = &e.value_from {
                match &from.field_ref {
                    Some(f) if supported_field_path(&f.field_path) => {}
                    Some(f) => {
                        return Err(format!(
                            "{here}.valueFrom.fieldRef.fieldPath: unsupported field {:?}",
                            f.field_path
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{here}.valueFrom: only fieldRef is supported in the sandbox"
                        ));
                    }
                }
            }
        }
        for (j, p) in c.ports.iter().enumerate() {
            protocol(p.protocol.as_deref())
                .map_err(|m| format!("{here}.ports[{j}].protocol: {m}"))?;
            if p.container_port == 0 {
                return Err(format!("{here}.ports[{j}].containerPort: must be 1-65535"));
            }
        }
    }
    super::security::validate(spec, at)
}

/// A Deployment: a matchLabels selector that its pod template carries, and
/// a valid pod template.
pub fn validate_deployment(d: &DeploymentObject) -> Result<(), String> {
    // More replicas than the largest sandbox has pod addresses could never run, and planning
    // them would take memory in proportion.
    let most = MAX_NODES * PODS_PER_NODE;
    if let Some(replicas) = d.spec.replicas.filter(|r| *r > most) {
        return Err(format!(
            "spec.replicas: {replicas} is more pods than a sandbox can hold ({most})"
        ));
    }
    let selector = &d.spec.selector.match_labels;
    if selector.is_empty() {
        return Err(
            "spec.selector.matchLabels: required (the sandbox supports matchLabels)".into(),
        );
    }
    let labels = &d.spec.template.metadata.labels;
    for (k, v) in selector {
        if labels.get(k) != Some(v) {
            return Err(format!(
                "spec.selector: label {k}={v} is not in spec.template.metadata.labels"
            ));
        }
    }
    validate_pod_spec(&d.spec.template.spec, "spec.template.spec")
}

/// A Service: a ClusterIP in the service range (or `None`), ports with
/// numbers, names when several, and a protocol the sandbox supports.
pub fn validate_service(spec: &ServiceSpec) -> Result<(), String> {
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if let Some(ip) = spec
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && !headless)
    {
        let parsed: std::net::Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("spec.clusterIP: {ip:?} is not an IPv4 address or \"None\""))?;
        if !in_service_range(parsed) {
            return Err(format!(
                "spec.clusterIP: {ip} is outside the service range {SERVICE_CIDR}"
            ));
        }
    }
    if spec.ports.is_empty() && !headless {
        return Err("spec.ports: at least one port is required".into());
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if p.port == 0 {
            return Err(format!("spec.ports[{i}].port: must be 1-65535"));
        }
        if spec.ports.len() > 1 && p.name.as_deref().unwrap_or("").is_empty() {
            return Err(format!(
                "spec.ports[{i}].name: required when a Service has several ports"
            ));
        }
        protocol(p.protocol.as_deref()).map_err(|m| format!("spec.ports[{i}].protocol: {m}"))?;
    }
    Ok(())
}

/// Normalised protocol: "tcp" or "udp".
pub fn protocol(p: Option<&str>) -> Result<&'static str, String> {
    match p.unwrap_or("TCP") {
        "TCP" => Ok("tcp"),
        "UDP" => Ok("udp"),
        other => Err(format!("unsupported protocol {other:?} (TCP or UDP)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        assert_eq!(
            parse_map_field("metadata.labels['version']", "metadata.labels"),
            Some("version")
        );
        assert!(supported_field_path("status.podIP"));
        assert!(!supported_field_path("status.phase"));
    }
}
