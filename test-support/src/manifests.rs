//! Kubernetes manifests as the controller reads them. Each is one YAML document ending with
//! `---`, so they concatenate.

/// Namespace `name`, enrolled in the mesh when `ambient`.
pub fn namespace(name: &str, ambient: bool) -> String {
    let labels = if ambient {
        "{istio.io/dataplane-mode: ambient}"
    } else {
        "{}"
    };
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {labels}}}\n---\n")
}

/// A running pod as the controller sees it: scheduled on `node`, phase Running at `ip`,
/// with `labels`.
pub fn running_pod(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    node: &str,
    ip: &str,
) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let labels = labels.join(", ");
    format!(
        "apiVersion: v1\nkind: Pod\n\
         metadata: {{name: {name}, namespace: {namespace}, labels: {{{labels}}}}}\n\
         spec: {{nodeName: {node}, containers: [{{name: c, image: i}}]}}\n\
         status: {{phase: Running, podIP: {ip}}}\n---\n"
    )
}
