//! Manifest pieces the tests and benchmarks assemble their sandboxes from, beside the
//! namespaces of `test_support::manifests`. Each is one YAML document ending with `---`, so
//! they concatenate.

/// ServiceAccount `name` in `namespace`.
pub fn service_account(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {namespace}}}\n---\n"
    )
}

/// A `meshctl app http-echo` pod on `port` (named `http`), pinned to `node`, labelled
/// `app: <name>`.
pub fn echo_pod(namespace: &str, name: &str, node: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  containers:
  - name: echo
    command: [meshctl, app, http-echo, --port, "{port}"]
    ports: [{{name: http, containerPort: {port}}}]
---
"#
    )
}

/// A `meshctl app tcp-echo --banner` pod on `port`, pinned to `node`, labelled `app: <name>`:
/// it writes its name and a newline, then echoes every byte until the client finishes.
pub fn tcp_echo_pod(namespace: &str, name: &str, node: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  containers:
  - name: echo
    command: [meshctl, app, tcp-echo, --port, "{port}", --banner]
    ports: [{{name: tcp, containerPort: {port}}}]
---
"#
    )
}

/// A `meshctl app otlp-receiver` pod on `port` (named `grpc-otlp`), pinned to `node`,
/// labelled `app: <name>`.
pub fn otlp_receiver_pod(namespace: &str, name: &str, node: &str, port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  containers:
  - name: receiver
    command: [meshctl, app, otlp-receiver, --port, "{port}"]
    ports: [{{name: grpc-otlp, containerPort: {port}}}]
---
"#
    )
}

/// An idle pod (`sleep infinity`) pinned to `node`, running as `service_account`: a client
/// the test drives with `meshctl exec`, or a netns a benchmark's threads enter.
pub fn idle_pod(namespace: &str, name: &str, node: &str, service_account: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  nodeName: {node}
  serviceAccountName: {service_account}
  containers: [{{name: client, command: [sleep, infinity]}}]
---
"#
    )
}

#[cfg(test)]
mod tests {
    use test_support::manifests::namespace;

    use super::*;

    #[test]
    fn pieces_concatenate_into_documents() {
        let yaml = namespace("mesh", true)
            + &service_account("mesh", "friend")
            + &echo_pod("mesh", "server", "node2", 8080)
            + &idle_pod("mesh", "client", "node1", "friend")
            + &otlp_receiver_pod("mesh", "collector", "node1", 4317);
        let docs: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Namespace", "ServiceAccount", "Pod", "Pod", "Pod"]);
        assert_eq!(
            docs[0]["metadata"]["labels"]["istio.io/dataplane-mode"],
            "ambient"
        );
        assert_eq!(docs[2]["metadata"]["labels"]["app"], "server");
        assert_eq!(
            docs[2]["spec"]["containers"][0]["ports"][0]["containerPort"],
            8080
        );
        assert_eq!(docs[3]["spec"]["serviceAccountName"], "friend");
        assert_eq!(
            docs[4]["spec"]["containers"][0]["command"][2],
            "otlp-receiver"
        );
    }
}
