//! One index of every object the sources provide, keyed by (kind, namespace, name).

use std::collections::BTreeMap;

use super::istio::{AuthorizationPolicy, PeerAuthentication};
use super::kube::{Gateway, Namespace, Pod, Service};
use super::object::{Object, ObjectKey};
use super::problem::Problem;

/// An object with the place it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// File path, or `kube`.
    pub origin: String,
    /// The object.
    pub object: Object,
}

/// Everything one origin (a file, or the Kubernetes API) contributes.
#[derive(Clone, Debug, Default, PartialEq)]
struct Contribution {
    objects: Vec<Object>,
    problems: Vec<Problem>,
}

/// All objects, by (kind, namespace, name), with their origin.
///
/// Sources replace their whole contribution at once ([`Index::replace_origin`]),
/// and the merged view is recomputed from the contributions: a rescan or a
/// watcher restart therefore cannot leave ghosts or duplicates behind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Index {
    /// Contributions in the order they were first added; a later one wins a
    /// conflict, so the order must be stable (a Vec, not a map by name).
    contributions: Vec<(String, Contribution)>,
    objects: BTreeMap<ObjectKey, Stored>,
    problems: Vec<Problem>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an index from whole contributions at once: (origin, objects,
    /// problems), in precedence order (a later origin wins a conflict).
    pub fn from_origins(origins: Vec<(String, Vec<Object>, Vec<Problem>)>) -> Self {
        let mut index = Self {
            contributions: origins
                .into_iter()
                .map(|(o, objects, problems)| (o, Contribution { objects, problems }))
                .collect(),
            ..Self::default()
        };
        index.rebuild();
        index
    }

    /// Replaces everything `origin` contributes with `objects`, and the
    /// problems found while reading them.
    pub fn replace_origin(&mut self, origin: &str, objects: Vec<Object>, problems: Vec<Problem>) {
        let contribution = Contribution { objects, problems };
        match self.contributions.iter_mut().find(|(o, _)| o == origin) {
            Some((_, c)) => *c = contribution,
            None => self.contributions.push((origin.to_string(), contribution)),
        }
        self.rebuild();
    }

    /// Removes everything `origin` contributed.
    pub fn remove_origin(&mut self, origin: &str) {
        self.contributions.retain(|(o, _)| o != origin);
        self.rebuild();
    }

    /// Origins currently contributing, in precedence order (later wins).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.contributions.iter().map(|(o, _)| o.as_str())
    }

    fn rebuild(&mut self) {
        self.objects.clear();
        self.problems.clear();
        for (origin, c) in &self.contributions {
            self.problems.extend(c.problems.iter().cloned());
            for object in &c.objects {
                let key = object.key();
                let stored = Stored {
                    origin: origin.clone(),
                    object: object.clone(),
                };
                if let Some(previous) = self.objects.insert(key.clone(), stored) {
                    self.problems.push(
                        Problem::new(origin, &key.kind, &key.namespace, &key.name).message(
                            format!(
                                "also defined in {}; the definition here wins",
                                previous.origin
                            ),
                        ),
                    );
                }
            }
        }
    }

    /// Problems found while reading the sources (bad documents, duplicates).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when the index holds no objects.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The object with this key.
    pub fn get(&self, key: &ObjectKey) -> Option<&Stored> {
        self.objects.get(key)
    }

    /// Every object, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &Stored)> {
        self.objects.iter()
    }

    /// Every object of `kind`, ordered by namespace then name.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Stored> + 'a {
        self.objects
            .range(ObjectKey::new(kind, "", "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, s)| s)
    }

    /// The namespace called `name`.
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.objects.get(&ObjectKey::new("Namespace", "", name)) {
            Some(Stored {
                object: Object::Namespace(n),
                ..
            }) => Some(n),
            _ => None,
        }
    }

    /// All namespaces.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, &Namespace)> {
        self.of_kind("Namespace").filter_map(|s| match &s.object {
            Object::Namespace(o) => Some((s.origin.as_str(), o)),
            _ => None,
        })
    }

    /// All pods.
    pub fn pods(&self) -> impl Iterator<Item = (&str, &Pod)> {
        self.of_kind("Pod").filter_map(|s| match &s.object {
            Object::Pod(o) => Some((s.origin.as_str(), o)),
            _ => None,
        })
    }

    /// All services.
    pub fn services(&self) -> impl Iterator<Item = (&str, &Service)> {
        self.of_kind("Service").filter_map(|s| match &s.object {
            Object::Service(o) => Some((s.origin.as_str(), o)),
            _ => None,
        })
    }

    /// All Gateway API gateways.
    pub fn gateways(&self) -> impl Iterator<Item = (&str, &Gateway)> {
        self.of_kind("Gateway").filter_map(|s| match &s.object {
            Object::Gateway(o) => Some((s.origin.as_str(), o)),
            _ => None,
        })
    }

    /// All authorization policies.
    pub fn authorization_policies(&self) -> impl Iterator<Item = (&str, &AuthorizationPolicy)> {
        self.of_kind("AuthorizationPolicy")
            .filter_map(|s| match &s.object {
                Object::AuthorizationPolicy(o) => Some((s.origin.as_str(), o)),
                _ => None,
            })
    }

    /// All peer authentication policies.
    pub fn peer_authentications(&self) -> impl Iterator<Item = (&str, &PeerAuthentication)> {
        self.of_kind("PeerAuthentication")
            .filter_map(|s| match &s.object {
                Object::PeerAuthentication(o) => Some((s.origin.as_str(), o)),
                _ => None,
            })
    }

    /// (namespace, service account) of every pod scheduled on `node`,
    /// deduplicated and sorted: the identities a node's ztunnel may request
    /// certificates for.
    pub fn pods_on_node(&self, node: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .pods()
            .filter(|(_, p)| !node.is_empty() && p.spec.node_name == node)
            .map(|(_, p)| {
                (
                    p.metadata.namespace.clone(),
                    p.service_account().to_string(),
                )
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
