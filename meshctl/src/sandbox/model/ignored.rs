//! Fields of pod specs the sandbox accepts but does not act on, reported as warnings so that
//! nothing a manifest asks for is dropped in silence: the security settings that need a
//! kernel-level runtime (seccomp, AppArmor, SELinux, `procMount`, `sysctls`), the host
//! namespaces a sandbox pod never shares, and the probe kinds and fields the sandbox's prober
//! does not run (`exec`, `grpc`, `startupProbe`, another `host`, `scheme: HTTPS`).

use serde_json::Value;

use super::objects::Object;

/// Pod-level fields: (path under the pod spec, why it is not applied).
const POD_FIELDS: &[(&str, &str)] = &[
    ("securityContext.seccompProfile", SECURITY),
    ("securityContext.appArmorProfile", SECURITY),
    ("securityContext.seLinuxOptions", SECURITY),
    (
        "securityContext.sysctls",
        "sandbox pods share the node's kernel settings",
    ),
    ("hostNetwork", HOST),
    ("hostPID", HOST),
    ("hostIPC", HOST),
];

/// Container-level fields.
const CONTAINER_FIELDS: &[(&str, &str)] = &[
    ("securityContext.seccompProfile", SECURITY),
    ("securityContext.appArmorProfile", SECURITY),
    ("securityContext.seLinuxOptions", SECURITY),
    (
        "securityContext.procMount",
        "every sandbox pod gets a fresh, masked /proc",
    ),
    ("readinessProbe.exec", PROBE_KIND),
    ("readinessProbe.grpc", PROBE_KIND),
    ("livenessProbe.exec", PROBE_KIND),
    ("livenessProbe.grpc", PROBE_KIND),
    (
        "startupProbe",
        "the sandbox runs no startup probes: readiness and liveness probes start at once",
    ),
    ("readinessProbe.httpGet.host", PROBE_HOST),
    ("livenessProbe.httpGet.host", PROBE_HOST),
    ("readinessProbe.tcpSocket.host", PROBE_HOST),
    ("livenessProbe.tcpSocket.host", PROBE_HOST),
];

const PROBE_KIND: &str = "the sandbox's prober runs httpGet and tcpSocket probes only: this \
                          probe is not run (a readiness probe not run leaves readiness to the \
                          declared ports)";
const PROBE_HOST: &str = "the sandbox's prober always probes the pod's IP";
const PROBE_HTTPS: &str = "the sandbox's prober speaks plain HTTP: this probe is not run";

const SECURITY: &str = "the sandbox confines pods with its own namespaces, user and \
                        capabilities, not with a kernel security profile";
const HOST: &str = "sandbox pods always get namespaces of their own";

/// One field not acted on: `(field path, why)`.
pub type Ignored = (String, &'static str);

/// The fields of `object` (a Pod, or a Deployment's pod template) the sandbox ignores.
pub fn ignored_fields(object: &Object) -> Vec<Ignored> {
    let (spec, at) = match object.kind.as_str() {
        "Pod" => (&object.value["spec"], "spec"),
        "Deployment" => (
            &object.value["spec"]["template"]["spec"],
            "spec.template.spec",
        ),
        _ => return Vec::new(),
    };
    let mut found = Vec::new();
    for (path, why) in POD_FIELDS {
        if is_set(lookup(spec, path)) {
            found.push((format!("{at}.{path}"), *why));
        }
    }
    for (list, key) in [
        ("containers", "containers"),
        ("initContainers", "initContainers"),
    ] {
        for (i, container) in spec[list].as_array().into_iter().flatten().enumerate() {
            for (path, why) in CONTAINER_FIELDS {
                if is_set(lookup(container, path)) {
                    found.push((format!("{at}.{key}[{i}].{path}"), *why));
                }
            }
            for probe in ["readinessProbe", "livenessProbe"] {
                let path = format!("{probe}.httpGet.scheme");
                if lookup(container, &path).as_str() == Some("HTTPS") {
                    found.push((format!("{at}.{key}[{i}].{path}"), PROBE_HTTPS));
                }
            }
        }
    }
    found
}

fn lookup<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(value, |v, key| &v[key])
}

/// Whether a field asks for something: present, and not `false`, empty or `Default`.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        Value::String(s) => !s.is_empty() && s != "Default",
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::manifest::parse_documents;

    #[test]
    fn security_profiles_host_namespaces_and_proc_mounts_are_named() {
        let objects = parse_documents(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  \
             hostPID: false\n  securityContext: {seccompProfile: {type: RuntimeDefault}, \
             sysctls: [{name: net.core.somaxconn, value: '1024'}]}\n  containers:\n  \
             - name: a\n    command: [sleep, infinity]\n    securityContext: {procMount: \
             Unmasked, runAsUser: 1000}\n  - name: b\n    command: [sleep, infinity]\n    \
             securityContext: {procMount: Default}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 1\n  \
             selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    \
             spec:\n      containers: [{name: c, command: [sleep, infinity], securityContext: \
             {appArmorProfile: {type: RuntimeDefault}}}]\n",
            "f.yaml",
        )
        .unwrap();
        let fields =
            |o: &Object| -> Vec<String> { ignored_fields(o).into_iter().map(|(f, _)| f).collect() };
        assert_eq!(
            fields(&objects[0]),
            [
                "spec.securityContext.seccompProfile",
                "spec.securityContext.sysctls",
                "spec.hostNetwork",
                "spec.containers[0].securityContext.procMount",
            ]
        );
        assert_eq!(
            fields(&objects[1]),
            ["spec.template.spec.containers[0].securityContext.appArmorProfile"]
        );
    }

    #[test]
    fn probes_the_prober_does_not_run_are_named() {
        let objects = parse_documents(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  \
             - name: a\n    command: [sleep, infinity]\n    \
             readinessProbe: {httpGet: {port: 80, scheme: HTTP}}\n    \
             livenessProbe: {exec: {command: ['true']}}\n    \
             startupProbe: {tcpSocket: {port: 80}}\n  \
             - name: b\n    command: [sleep, infinity]\n    \
             readinessProbe: {grpc: {port: 9000}}\n    \
             livenessProbe: {httpGet: {port: 80, scheme: HTTPS}}\n",
            "f.yaml",
        )
        .unwrap();
        let fields: Vec<String> = ignored_fields(&objects[0])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].livenessProbe.exec",
                "spec.containers[0].startupProbe",
                "spec.containers[1].readinessProbe.grpc",
                "spec.containers[1].livenessProbe.httpGet.scheme",
            ]
        );
    }
}
