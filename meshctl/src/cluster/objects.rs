//! The objects the mesh reads, listed from a cluster as the analysis takes them: each with its
//! `apiVersion` and `kind` (list items lack them), without server-side bookkeeping, named
//! `kubernetes:<Kind>/<namespace>/<name>` as the controller names them.

use controller::source::kube::origin;
use serde_json::Value;

use super::api::ApiServer;
use super::error::Result;
use super::kinds::ListedKind;
use crate::sandbox::model::objects::Object;

/// Every object of `kinds` the cluster holds; a kind it does not serve has none.
pub async fn list_all(api: &ApiServer, kinds: &[ListedKind]) -> Result<Vec<Object>> {
    let mut objects = Vec::new();
    for kind in kinds {
        let items = api.list(&kind.list_path()).await?.unwrap_or_default();
        objects.extend(items.into_iter().map(|item| object(kind, item)));
    }
    Ok(objects)
}

/// One listed item as an object.
pub fn object(kind: &ListedKind, mut item: Value) -> Object {
    item["apiVersion"] = Value::from(kind.api_version());
    item["kind"] = Value::from(kind.kind);
    if let Some(metadata) = item["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    let name = item["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let namespace = kind.namespaced.then(|| {
        item["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
            .to_owned()
    });
    Object {
        api_version: kind.api_version(),
        kind: kind.kind.to_owned(),
        source: origin(kind.kind, namespace.as_deref().unwrap_or_default(), &name),
        namespace,
        name,
        value: item,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn listed_items_get_their_kind_and_the_controllers_origin() {
        let telemetry = ListedKind {
            group: "telemetry.istio.io",
            version: "v1",
            kind: "Telemetry",
            plural: "telemetries",
            namespaced: true,
        };
        let item = json!({"metadata": {"name": "t", "namespace": "shop",
                                       "managedFields": [{"manager": "kubectl"}]}});
        let object = object(&telemetry, item);
        assert_eq!(object.source, "kubernetes:Telemetry/shop/t");
        assert_eq!(object.display(), "Telemetry shop/t");
        assert_eq!(object.value["apiVersion"], "telemetry.istio.io/v1");
        assert_eq!(object.value["kind"], "Telemetry");
        assert!(object.value["metadata"]["managedFields"].is_null());
    }
}
