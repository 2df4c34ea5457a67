//! References in AuthorizationPolicies to identities nothing has: a namespace that does not
//! exist but one within a typo of it does, a service account no pod of its namespace runs as. Such a rule is valid and enforced
//! as written, but it is most often a typo that silently allows nothing (ALLOW) or denies
//! nothing (DENY), so each is a warning naming the field, with the nearest existing name as a
//! hint.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{AuthorizationPolicy, Index, Problem, Source, closest};

/// Who exists: namespaces, and the service accounts pods run as in each.
struct Identities<'a> {
    namespaces: BTreeSet<&'a str>,
    accounts: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Identities<'a> {
    fn of(index: &'a Index) -> Self {
        let mut accounts: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (_, pod) in index.pods() {
            accounts
                .entry(pod.metadata.namespace.as_str())
                .or_default()
                .insert(pod.service_account());
        }
        Self {
            namespaces: index
                .namespaces()
                .map(|(_, ns)| ns.metadata.name.as_str())
                .collect(),
            accounts,
        }
    }

    /// Why `namespace` names nothing, or `None` when it exists. Only a likely typo of an
    /// existing namespace is reported: any other may be one not created yet.
    fn missing_namespace(&self, namespace: &str) -> Option<String> {
        if self.namespaces.contains(namespace) {
            return None;
        }
        let near = closest(namespace, self.namespaces.iter().copied())?;
        Some(format!(
            "warning: there is no namespace {namespace:?}; did you mean {near:?}?"
        ))
    }

    /// Why `namespace/account` names nobody, or `None` when a pod runs as it. A namespace
    /// without pods is not judged: its workloads may simply not be deployed yet.
    fn missing_account(&self, namespace: &str, account: &str) -> Option<String> {
        let known = self.accounts.get(namespace)?;
        if known.contains(account) {
            return None;
        }
        Some(format!(
            "warning: no pod runs as service account {namespace}/{account}{}",
            hint(account, known.iter().copied())
        ))
    }
}

/// A warning for each reference of `policies` to a namespace or service account that does not
/// exist in `index`. Wildcards and malformed values are left to the translation proper.
pub(crate) fn unknown_identities(index: &Index, trust_domain: &str) -> Vec<Problem> {
    let identities = Identities::of(index);
    let mut found = Vec::new();
    for (origin, policy) in index.authorization_policies() {
        if policy.unreadable.is_some() {
            continue;
        }
        let problem =
            |field: String, message: String| policy_problem(origin, policy, field, message);
        for (i, rule) in policy.spec.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let at = format!("spec.rules[{i}].from[{j}].source");
                let references = Refs {
                    identities: &identities,
                    trust_domain,
                    namespace: &policy.metadata.namespace,
                };
                for (field, message) in references.missing_in(&from.source) {
                    found.push(problem(format!("{at}.{field}"), message));
                }
            }
        }
    }
    found
}

/// What the references of one policy are checked against.
struct Refs<'a> {
    identities: &'a Identities<'a>,
    /// Principals of other trust domains are not this mesh's to know.
    trust_domain: &'a str,
    /// The policy's namespace, that of a bare service account name.
    namespace: &'a str,
}

impl Refs<'_> {
    /// `(field, message)` for each missing identity `source` names.
    fn missing_in(&self, source: &Source) -> Vec<(String, String)> {
        let (identities, own) = (self.identities, self.namespace);
        let mut found = Vec::new();
        let lists = [
            ("namespaces", &source.namespaces),
            ("notNamespaces", &source.not_namespaces),
        ];
        for (name, values) in lists {
            for (k, value) in values.iter().enumerate() {
                if let Some(why) = exact(value).and_then(|ns| identities.missing_namespace(ns)) {
                    found.push((format!("{name}[{k}]"), why));
                }
            }
        }
        let accounts = [
            ("serviceAccounts", &source.service_accounts),
            ("notServiceAccounts", &source.not_service_accounts),
        ];
        for (name, values) in accounts {
            for (k, value) in values.iter().enumerate() {
                let (ns, sa) = value.split_once('/').unwrap_or((own, value));
                if let Some(why) = identities.missing_account(ns, sa) {
                    found.push((format!("{name}[{k}]"), why));
                }
            }
        }
        let principals = [
            ("principals", &source.principals),
            ("notPrincipals", &source.not_principals),
        ];
        for (name, values) in principals {
            for (k, value) in values.iter().enumerate() {
                let account = exact(value).and_then(|p| principal_account(p, self.trust_domain));
                let Some((ns, sa)) = account else {
                    continue;
                };
                if let Some(why) = identities.missing_account(ns, sa) {
                    found.push((format!("{name}[{k}]"), why));
                }
            }
        }
        found
    }
}

/// The value when it has no wildcard.
fn exact(value: &str) -> Option<&str> {
    (!value.contains('*')).then_some(value)
}

/// `(namespace, account)` of a principal `<trust_domain>/ns/<ns>/sa/<sa>`.
fn principal_account<'a>(principal: &'a str, trust_domain: &str) -> Option<(&'a str, &'a str)> {
    let rest = principal.strip_prefix(trust_domain)?.strip_prefix("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains('/')).then_some((ns, sa))
}

fn policy_problem(
    origin: &str,
    policy: &AuthorizationPolicy,
    field: String,
    message: String,
) -> Problem {
    let m = &policy.metadata;
    Problem::new(origin, "AuthorizationPolicy", &m.namespace, &m.name)
        .field(field)
        .message(message)
}

/// `; did you mean "x"?` for the known name nearest to `name`, if one is a likely typo of it.
fn hint<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    closest(name, known)
        .map(|k| format!("; did you mean {k:?}?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Object, parse_documents};

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {serviceAccountName: frontend, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop}
spec: {containers: [{name: c}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/fronted, cluster.local/ns/shop/sa/frontend,
                     "*/sa/anything", cluster.local/ns/shop/sa/default, other.td/ns/shop/sa/x]
        namespaces: [shopp, shop, monitoring]
        serviceAccounts: [frontend, shop/backend, other/frontend]
"#;

    fn index() -> Index {
        let parsed = parse_documents("f.yaml", OBJECTS, false);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        let objects: Vec<Object> = parsed.objects;
        Index::from_origins(vec![("f.yaml".to_owned(), objects, Vec::new())])
    }

    #[test]
    fn each_missing_identity_is_a_warning_naming_its_field_with_a_hint() {
        let found: Vec<(String, String)> = unknown_identities(&index(), "cluster.local")
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect();
        let source = "spec.rules[0].from[0].source";
        assert_eq!(
            found,
            [
                (
                    format!("{source}.namespaces[0]"),
                    "warning: there is no namespace \"shopp\"; did you mean \"shop\"?".to_owned()
                ),
                (
                    format!("{source}.serviceAccounts[1]"),
                    "warning: no pod runs as service account shop/backend".to_owned()
                ),
                (
                    format!("{source}.principals[0]"),
                    "warning: no pod runs as service account shop/fronted; did you mean \
                     \"frontend\"?"
                        .to_owned()
                ),
            ]
        );
    }
}
