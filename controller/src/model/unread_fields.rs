//! Fields of the objects the mesh reads that it does not act on: typos, and features it does
//! not implement. Each object is decoded into its model once more, noting every key the model
//! has no place for; the envelope (`apiVersion`, `kind`, `metadata`, `status`) is the API
//! server's business and left out.

use serde::de::DeserializeOwned;
use serde_ignored::Path;

use super::istio::{AuthorizationPolicy, PeerAuthentication};
use super::routes::{
    DestinationRule, GrpcRoute, HttpRoute, ServiceProfile, TcpRoute, TrafficSplit, VirtualService,
};
use super::telemetry::Telemetry;

/// Top-level keys every object carries that no mesh model reads.
const ENVELOPE: &[&str] = &["apiVersion", "kind", "metadata", "status"];

/// The paths (`spec.http[0].corsPolicy`) of the fields of `value`, an object of `kind`, that
/// the mesh does not read; empty for kinds whose every field is not mesh configuration (Pods,
/// Services, ...), and for EnvoyFilters, which are never enforced as a whole.
pub fn unread_fields(kind: &str, value: &serde_json::Value) -> Vec<String> {
    match kind {
        "AuthorizationPolicy" => ignored::<AuthorizationPolicy>(value),
        "PeerAuthentication" => ignored::<PeerAuthentication>(value),
        "VirtualService" => ignored::<VirtualService>(value),
        "DestinationRule" => ignored::<DestinationRule>(value),
        "HTTPRoute" | super::linkerd::LINKERD_HTTP_ROUTE => ignored::<HttpRoute>(value),
        "GRPCRoute" => ignored::<GrpcRoute>(value),
        "TCPRoute" => ignored::<TcpRoute>(value),
        "TrafficSplit" => ignored::<TrafficSplit>(value),
        "ServiceProfile" => ignored::<ServiceProfile>(value),
        "Telemetry" => ignored::<Telemetry>(value),
        _ => Vec::new(),
    }
}

/// Whether a security policy with unread fields must fail closed: the field could narrow
/// what it denies or widen what it allows.
pub fn is_security_kind(kind: &str) -> bool {
    matches!(kind, "AuthorizationPolicy" | "PeerAuthentication")
}

fn ignored<T: DeserializeOwned>(value: &serde_json::Value) -> Vec<String> {
    // The same YAML decoder the models are read with, so that both see the same shapes
    // (JSON text is YAML). A value that does not decode is reported by that decoding.
    let Ok(text) = serde_json::to_string(value) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    let decoder = serde_yaml_ng::Deserializer::from_str(&text);
    let _: Result<T, _> = serde_ignored::deserialize(decoder, |path| {
        let rendered = render(&path);
        let top = rendered.split(['.', '[']).next().unwrap_or_default();
        if !ENVELOPE.contains(&top) {
            paths.push(rendered);
        }
    });
    paths
}

/// `spec.http[0].corsPolicy`, the way decoding errors name fields.
pub(crate) fn render(path: &Path<'_>) -> String {
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render(parent)),
        Path::Map { parent, key } => {
            let parent = render(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render(parent),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn typos_and_unimplemented_fields_are_named_by_path() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "r", "uid": "x", "annotations": {"a": "b"}},
            "status": {"conditions": []},
            "spec": {"hosts": ["a"], "htpp": [], "http": [
                {"route": [{"destination": {"host": "a"}}]},
                {"mirror_percent": 5, "route": [{"destination": {"hots": "a"}}]}
            ]}
        });
        assert_eq!(
            unread_fields("VirtualService", &vs),
            [
                "spec.htpp",
                "spec.http[1].mirror_percent",
                "spec.http[1].route[0].destination.hots"
            ]
        );
    }

    #[test]
    fn a_policy_field_with_a_typo_is_found() {
        let ap = json!({
            "kind": "AuthorizationPolicy", "metadata": {"name": "p"},
            "spec": {"action": "DENY", "rules": [{"form": [{"source": {"principals": ["x"]}}],
                                                  "to": [{"operation": {"paths": ["/a"]}}]}]}
        });
        assert_eq!(
            unread_fields("AuthorizationPolicy", &ap),
            ["spec.rules[0].form"]
        );
        assert!(is_security_kind("AuthorizationPolicy"));
    }

    #[test]
    fn objects_read_in_full_and_kinds_out_of_scope_have_none() {
        let route = json!({
            "kind": "HTTPRoute", "metadata": {"name": "r"},
            "spec": {"parentRefs": [{"kind": "Service", "name": "a"}],
                     "rules": [{"backendRefs": [{"name": "a", "port": 80}]}]}
        });
        assert!(unread_fields("HTTPRoute", &route).is_empty());
        let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"anything": 1}});
        assert!(unread_fields("Pod", &pod).is_empty());
    }
}
