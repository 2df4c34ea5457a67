//! What a process is started with: a container's environment (PATH with
//! the sandbox's binaries first, HOME, HOSTNAME, its `env` with downward-API
//! fields and `$(VAR)` references filled in) and command line, and the
//! environment of the system components.

use std::path::Path;

use super::cluster::{Node, Pod};
use super::objects::Container;
use super::validate::parse_map_field;

/// The PATH every container gets, after the sandbox's own binaries.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Environment of a container: PATH (sandbox binaries first), HOME (the
/// container user's), HOSTNAME, then the container's `env` in order, with
/// `$(VAR)` references to earlier variables expanded and downward-API
/// fields filled in.
pub fn container_env(
    pod: &Pod,
    node: &Node,
    c: &Container,
    bin_dir: &Path,
    home: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            format!("{}:{SYSTEM_PATH}", bin_dir.display()),
        ),
        ("HOME".into(), home.into()),
        ("HOSTNAME".into(), pod.name.clone()),
    ];
    for var in &c.env {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => from
                .field_ref
                .as_ref()
                .map(|f| field_value(pod, node, &f.field_path))
                .unwrap_or_default(),
            (Some(v), None) => expand(v, &env),
            (None, None) => String::new(),
        };
        env.retain(|(k, _)| k != &var.name);
        env.push((var.name.clone(), value));
    }
    env
}

/// Downward-API value of `path` for `pod`.
pub fn field_value(pod: &Pod, node: &Node, path: &str) -> String {
    match path {
        "metadata.name" => pod.name.clone(),
        "metadata.namespace" => pod.namespace.clone(),
        "metadata.uid" => pod.uid.clone(),
        "status.podIP" | "status.podIPs" => pod.ip.to_string(),
        "status.hostIP" => node.ip.to_string(),
        "spec.nodeName" => node.name.clone(),
        "spec.serviceAccountName" => pod.service_account.clone(),
        _ => {
            let label = parse_map_field(path, "metadata.labels").and_then(|k| pod.labels.get(k));
            let annotation =
                parse_map_field(path, "metadata.annotations").and_then(|k| pod.annotations.get(k));
            label.or(annotation).cloned().unwrap_or_default()
        }
    }
}

/// Kubernetes' `$(VAR)` expansion: known variables are replaced, `$$` is a
/// literal `$`, anything else is left as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The argv of a container, `$(VAR)`-expanded. Without a `command` the
/// `args` are run as the command: there are no images to supply an
/// entrypoint.
pub fn container_argv(c: &Container, env: &[(String, String)]) -> Vec<String> {
    c.command
        .iter()
        .chain(c.args.iter())
        .map(|a| expand(a, env))
        .collect()
}

/// The environment of a system process: PATH with the sandbox's binaries
/// first, HOME, backtraces on panic and no colour codes (both land in its
/// log file).
pub fn system_env(bin_dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "PATH".into(),
            format!("{}:{SYSTEM_PATH}", bin_dir.display()),
        ),
        ("HOME".into(), "/root".into()),
        ("RUST_BACKTRACE".into(), "1".into()),
        ("NO_COLOR".into(), "1".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::cluster::Phase;
    use crate::sandbox::model::objects::{EnvVar, EnvVarSource, FieldRef};
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::path::Path;

    fn pod() -> Pod {
        Pod {
            name: "orders-v1-abc".into(),
            namespace: "shop".into(),
            uid: "u-1".into(),
            node: "node2".into(),
            ip: Ipv4Addr::new(10, 244, 2, 3),
            netns: "ms-t.shop.orders-v1-abc".into(),
            veth: "veth3".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
            annotations: BTreeMap::new(),
            service_account: "orders".into(),
            owner: None,
            spec: serde_json::Value::Null,
            spec_hash: String::new(),
            containers: vec![],
            phase: Phase::Pending,
            ready: false,
            unhealthy: false,
            liveness_failures: 0,
            created: 0,
            network: true,
        }
    }

    fn node() -> Node {
        Node {
            name: "node2".into(),
            index: 2,
            ip: Ipv4Addr::new(172, 18, 0, 3),
            netns: "n".into(),
            next_host: 2,
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(FieldRef {
                    field_path: path.into(),
                }),
            }),
        }
    }

    #[test]
    fn env_has_path_hostname_fields_and_expansion() {
        let c = Container {
            name: "app".into(),
            env: vec![
                field("VERSION", "metadata.labels['version']"),
                field("POD_IP", "status.podIP"),
                field("NODE", "spec.nodeName"),
                field("SA", "spec.serviceAccountName"),
                EnvVar {
                    name: "URL".into(),
                    value: Some("http://$(POD_IP):80/$$(x)$(NOPE)".into()),
                    value_from: None,
                },
            ],
            command: vec!["meshctl".into(), "--v=$(VERSION)".into()],
            ..Default::default()
        };
        let env = container_env(&pod(), &node(), &c, Path::new("/opt/bin"), "/");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert!(get("PATH").unwrap().starts_with("/opt/bin:"));
        assert_eq!(get("HOSTNAME"), Some("orders-v1-abc"));
        assert_eq!(get("VERSION"), Some("v1"));
        assert_eq!(get("POD_IP"), Some("10.244.2.3"));
        assert_eq!(get("NODE"), Some("node2"));
        assert_eq!(get("SA"), Some("orders"));
        assert_eq!(get("URL"), Some("http://10.244.2.3:80/$(x)$(NOPE)"));
        assert_eq!(container_argv(&c, &env), vec!["meshctl", "--v=v1"]);
    }
}
