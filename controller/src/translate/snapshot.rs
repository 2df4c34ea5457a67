//! What the controller serves: every xDS resource, by type URL and name, with its content
//! version.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use api::prost_types::Any;

use super::version;

/// Everything the controller serves, as xDS resources, keyed by type URL then
/// resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// type URL → resource name → resource.
    pub resources: BTreeMap<String, BTreeMap<String, Resource>>,
    /// type URL → digest of its resources' names and versions, computed once per snapshot
    /// (not per client and push).
    system_versions: BTreeMap<String, String>,
}

/// The snapshot the controller serves: `None` until the first complete translation, so that
/// nothing is ever served from a configuration that was not read in full.
pub type Published = Option<std::sync::Arc<Snapshot>>;

/// One xDS resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// Content hash (hex) of the resource: equal content, equal version.
    pub version: String,
    /// The resource, packed.
    pub body: Any,
}

impl Snapshot {
    /// A snapshot of `resources`.
    pub fn new(resources: BTreeMap<String, BTreeMap<String, Resource>>) -> Self {
        let system_versions = resources
            .iter()
            .map(|(type_url, of_type)| (type_url.clone(), system_version(of_type)))
            .collect();
        Self {
            resources,
            system_versions,
        }
    }

    /// `system_version_info` of `type_url`: a digest of its resources' names and versions,
    /// the same for every client that sees the same state.
    pub fn system_version(&self, type_url: &str) -> String {
        self.system_versions
            .get(type_url)
            .cloned()
            .unwrap_or_else(|| system_version(&BTreeMap::new()))
    }

    /// Adds a resource, versioned by its content.
    pub(super) fn insert(&mut self, type_url: &str, name: String, body: Any) {
        let version = version::version(&body.value);
        self.resources
            .entry(type_url.to_string())
            .or_default()
            .insert(name, Resource { version, body });
    }

    /// This snapshot with `name` of `type_url` set to `body` (versioned by its content), the
    /// other resources of the type removed: for a type the controller serves from outside
    /// the translation (the trust bundle).
    pub fn with_only(&self, type_url: &str, name: &str, body: Any) -> Snapshot {
        let mut resources = self.resources.clone();
        let version = version::version(&body.value);
        let of_type = BTreeMap::from([(name.to_owned(), Resource { version, body })]);
        resources.insert(type_url.to_owned(), of_type);
        Snapshot::new(resources)
    }

    /// The resources of one type (empty when there are none).
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = (&String, &Resource)> {
        self.resources.get(type_url).into_iter().flatten()
    }

    /// Total number of resources.
    pub fn len(&self) -> usize {
        self.resources.values().map(BTreeMap::len).sum()
    }

    /// True when there are no resources.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A digest of a type's resource versions, used as `system_version_info`: identical for every
/// client that sees the same state, which makes comparing clients easy in logs.
pub(crate) fn system_version(resources: &BTreeMap<String, Resource>) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for (name, resource) in resources {
        name.hash(&mut hasher);
        resource.version.hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(entries: &[(&str, &str)]) -> BTreeMap<String, Resource> {
        entries
            .iter()
            .map(|(n, v)| {
                let resource = Resource {
                    version: v.to_string(),
                    body: Any::default(),
                };
                (n.to_string(), resource)
            })
            .collect()
    }

    #[test]
    fn system_version_is_content_based() {
        let a = resources(&[("a", "1")]);
        let b = resources(&[("a", "2")]);
        assert_eq!(system_version(&a), system_version(&a.clone()));
        assert_ne!(system_version(&a), system_version(&b));
    }
}
