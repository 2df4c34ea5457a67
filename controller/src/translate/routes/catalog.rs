//! What the route translations look up: services by name or hostname,
//! workloads by labels, and the identity of the object being translated.

use std::collections::BTreeMap;

use api::waypoint::ConfigSource;

use super::super::bindings::workload_uid;
use super::super::labels::selects;
use super::super::options::DOMAIN_SUFFIX;
use super::super::service_key::ServiceKey;
use crate::model::{self, Index, ObjectMeta, Problem};

/// Services and pods of the index, indexed for the translations.
pub(crate) struct Catalog<'a> {
    /// The index.
    pub index: &'a Index,
    services: BTreeMap<ServiceKey, &'a model::Service>,
    /// Cluster name in workload uids.
    pub cluster_id: &'a str,
}

impl<'a> Catalog<'a> {
    /// Indexes `index`.
    pub fn new(index: &'a Index, cluster_id: &'a str) -> Self {
        let services = index
            .services()
            .map(|(_, s)| (ServiceKey::new(&s.metadata.namespace, &s.metadata.name), s))
            .collect();
        Self {
            index,
            services,
            cluster_id,
        }
    }

    /// The Service `key`.
    pub fn service(&self, key: &ServiceKey) -> Option<&'a model::Service> {
        self.services.get(key).copied()
    }

    /// Resolves a host as Istio does for mesh services: `name` (in
    /// `namespace`), `name.ns`, `name.ns.svc` or the FQDN.
    pub fn resolve_host(&self, host: &str, namespace: &str) -> Option<ServiceKey> {
        let host = host.trim_end_matches('.');
        let parts: Vec<&str> = host.split('.').collect();
        let suffix: Vec<&str> = DOMAIN_SUFFIX.split('.').collect();
        let key = match parts.as_slice() {
            [name] => ServiceKey::new(namespace, name),
            [name, ns] | [name, ns, "svc"] => ServiceKey::new(ns, name),
            [name, ns, "svc", rest @ ..] if rest == suffix.as_slice() => ServiceKey::new(ns, name),
            _ => return None,
        };
        self.services.contains_key(&key).then_some(key)
    }

    /// [`Catalog::resolve_host`], or an error at `field` when `host` names
    /// no Service.
    pub fn require_host(
        &self,
        host: &str,
        namespace: &str,
        field: impl Into<String>,
    ) -> Result<ServiceKey, Invalid> {
        self.resolve_host(host, namespace)
            .ok_or_else(|| Invalid::new(field, format!("{host:?} names no Service of the mesh")))
    }

    /// UIDs of the running workloads in `namespace` carrying every label of
    /// `labels`, sorted.
    pub fn workloads_with(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut uids: Vec<String> = self
            .index
            .pods()
            .filter(|(_, p)| {
                p.metadata.namespace == namespace && selects(labels, &p.metadata.labels)
            })
            .map(|(_, p)| workload_uid(self.cluster_id, p))
            .collect();
        uids.sort();
        uids
    }
}

/// The object being translated: names it in problems and in route sources,
/// and orders it among competitors (oldest first, then by namespace/name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Obj {
    /// File (or `kube`) it came from.
    pub origin: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.creationTimestamp`, empty when unknown.
    pub created: String,
}

impl Obj {
    /// Describes an object of `kind` from `origin`.
    pub fn new(origin: &str, kind: &str, meta: &ObjectMeta) -> Self {
        Self {
            origin: origin.to_string(),
            kind: kind.to_string(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            created: meta.creation_timestamp.clone().unwrap_or_default(),
        }
    }

    /// A problem about this object.
    pub fn problem(&self, field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem::new(&self.origin, &self.kind, &self.namespace, &self.name)
            .field(field)
            .message(message)
    }

    /// The route source naming this object.
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Precedence among competing objects: older first, then by name.
    pub fn order(&self) -> (&str, &str, &str) {
        (&self.created, &self.namespace, &self.name)
    }
}

/// Why an object cannot be translated: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Invalid {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Invalid {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Shorthand for converting a value error into an [`Invalid`] at `field`.
pub(crate) trait At<T> {
    /// Attaches the field path.
    fn at(self, field: &str) -> Result<T, Invalid>;
}

impl<T> At<T> for Result<T, String> {
    fn at(self, field: &str) -> Result<T, Invalid> {
        self.map_err(|m| Invalid::new(field, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec: {clusterIP: 10.96.0.9}\n";
        let parsed = crate::model::parse_documents("s.yaml", yaml, false);
        let index = Index::from_origins(vec![("s.yaml".into(), parsed.objects, vec![])]);
        let c = Catalog::new(&index, "Kubernetes");
        let want = Some(ServiceKey::new("shop", "reviews"));
        assert_eq!(c.resolve_host("reviews", "shop"), want);
        assert_eq!(c.resolve_host("reviews.shop", "other"), want);
        assert_eq!(c.resolve_host("reviews.shop.svc", "other"), want);
        assert_eq!(c.resolve_host("reviews.shop.svc.cluster.local", "x"), want);
        assert_eq!(c.resolve_host("reviews", "other"), None);
        assert_eq!(c.resolve_host("reviews.shop.svc.example.com", "x"), None);
        assert_eq!(c.resolve_host("*.shop.svc.cluster.local", "x"), None);
    }
}
