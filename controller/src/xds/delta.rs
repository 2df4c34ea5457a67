//! Incremental (delta) xDS bookkeeping: what one client asked for and what it already has,
//! and the pure computation of what to send it next.

use std::collections::{BTreeMap, BTreeSet};

use crate::translate::Resource;

/// The wildcard resource name of delta xDS.
pub const WILDCARD: &str = "*";

/// What a client subscribed to, for one type.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Whether the client wants every resource of the type.
    pub wildcard: bool,
    /// Names subscribed explicitly (in addition to the wildcard, if any).
    pub names: BTreeSet<String>,
}

impl Subscription {
    /// Whether a resource named `name` is in scope.
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Applies one request's subscribe and unsubscribe lists. On a type's first request an
    /// empty subscribe list means wildcard, as the delta xDS protocol defines ("legacy
    /// wildcard"); afterwards `*` subscribes or unsubscribes the wildcard explicitly.
    pub fn update(&mut self, first: bool, subscribe: &[String], unsubscribe: &[String]) {
        if first && subscribe.is_empty() {
            self.wildcard = true;
        }
        for name in subscribe {
            if name == WILDCARD {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
            }
        }
        for name in unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else {
                self.names.remove(name);
            }
        }
    }
}

/// What a client should be told next about one type.
#[derive(Debug, Default, PartialEq)]
pub struct Delta<'a> {
    /// Resources the client lacks or holds at another version, by name.
    pub upserts: Vec<(&'a str, &'a Resource)>,
    /// Names the client holds that no longer exist.
    pub removals: Vec<String>,
}

impl Delta<'_> {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Compares what the client has (`known`: name → version) with the current `resources` of the
/// type, within its subscription.
///
/// Names the client holds but no longer wants are not reported as removed: per the protocol,
/// a client forgets what it unsubscribes from.
pub fn compute<'a>(
    known: &BTreeMap<String, String>,
    subscription: &Subscription,
    resources: &'a BTreeMap<String, Resource>,
) -> Delta<'a> {
    let upserts = resources
        .iter()
        .filter(|(name, _)| subscription.wants(name))
        .filter(|(name, resource)| known.get(*name) != Some(&resource.version))
        .map(|(name, resource)| (name.as_str(), resource))
        .collect();
    let removals = known
        .keys()
        .filter(|name| !resources.contains_key(*name))
        .cloned()
        .collect();
    Delta { upserts, removals }
}

/// Records that `delta` was sent: afterwards the client is assumed to hold exactly it. The
/// assumption stands even if the client rejects the push (NACK), so a rejected version is not
/// resent in a loop; the next change of the resource is sent as usual.
pub fn record(known: &mut BTreeMap<String, String>, delta: &Delta<'_>) {
    for (name, resource) in &delta.upserts {
        known.insert((*name).to_owned(), resource.version.clone());
    }
    for name in &delta.removals {
        known.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::prost_types::Any;

    fn res(version: &str) -> Resource {
        Resource {
            version: version.into(),
            body: Any::default(),
        }
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn resources(entries: &[(&str, &str)]) -> BTreeMap<String, Resource> {
        entries
            .iter()
            .map(|(n, v)| (n.to_string(), res(v)))
            .collect()
    }

    fn wildcard() -> Subscription {
        let mut s = Subscription::default();
        s.update(true, &[], &[]);
        s
    }

    fn names(delta: &Delta<'_>) -> Vec<String> {
        delta.upserts.iter().map(|(n, _)| n.to_string()).collect()
    }

    #[test]
    fn fresh_wildcard_client_gets_everything() {
        let r = resources(&[("a", "1"), ("b", "1")]);
        let d = compute(&BTreeMap::new(), &wildcard(), &r);
        assert_eq!(names(&d), ["a", "b"]);
        assert!(d.removals.is_empty());
    }

    #[test]
    fn only_changed_and_removed() {
        let known = map(&[("a", "1"), ("b", "1"), ("gone", "1")]);
        let r = resources(&[("a", "1"), ("b", "2"), ("new", "1")]);
        let d = compute(&known, &wildcard(), &r);
        assert_eq!(names(&d), ["b", "new"]);
        assert_eq!(d.removals, ["gone"]);
        let mut known = known;
        record(&mut known, &d);
        assert_eq!(known, map(&[("a", "1"), ("b", "2"), ("new", "1")]));
        assert!(compute(&known, &wildcard(), &r).is_empty());
    }

    #[test]
    fn explicit_names_only() {
        let mut sub = Subscription::default();
        sub.update(true, &["b".into()], &[]);
        assert!(!sub.wildcard);
        let r = resources(&[("a", "1"), ("b", "1")]);
        assert_eq!(names(&compute(&BTreeMap::new(), &sub, &r)), ["b"]);
        sub.update(false, &["a".into()], &["b".into()]);
        assert_eq!(sub.names.iter().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn star_toggles_wildcard() {
        let mut sub = Subscription::default();
        sub.update(true, &["x".into()], &[]);
        assert!(!sub.wildcard);
        sub.update(false, &[WILDCARD.into()], &[]);
        assert!(sub.wildcard);
        sub.update(false, &[], &[WILDCARD.into()]);
        assert!(!sub.wildcard && sub.wants("x"));
    }
}
