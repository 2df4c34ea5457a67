//! Helpers shared by the translation tests (included with `#[path]`).
#![allow(dead_code)]

use api::security::Authorization;
use api::workload::{Address, Service, Workload, address};
use controller::model::{Index, Object, Problem, parse_documents};
use controller::translate::{TranslateOptions, Translation, translate};

/// Reads a fixture: (origin, text).
pub fn fixture(name: &str) -> (String, String) {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (format!("fixtures/{name}"), text)
}

/// An index of the given fixtures, one origin each.
pub fn index_of(names: &[&str]) -> Index {
    let origins = names
        .iter()
        .map(|n| {
            let (origin, text) = fixture(n);
            let parsed = parse_documents(&origin, &text, false);
            (origin, parsed.objects, parsed.problems)
        })
        .collect();
    Index::from_origins(origins)
}

/// An index of objects from inline YAML.
pub fn index_from(origin: &str, yaml: &str) -> Index {
    let parsed = parse_documents(origin, yaml, false);
    Index::from_origins(vec![(origin.to_string(), parsed.objects, parsed.problems)])
}

/// Objects from inline YAML.
pub fn objects(origin: &str, yaml: &str) -> Vec<Object> {
    let parsed = parse_documents(origin, yaml, false);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    parsed.objects
}

/// Translates the fixtures with default options.
pub fn run(names: &[&str]) -> Translation {
    translate(&index_of(names), &TranslateOptions::default())
}

fn addresses(t: &Translation) -> impl Iterator<Item = (&String, Address)> {
    t.snapshot
        .of_type(api::ADDRESS_TYPE_URL)
        .map(|(name, r)| (name, api::unpack::<Address>(&r.body).expect("decodes")))
}

/// The workload of pod `ns/name`.
pub fn workload(t: &Translation, ns: &str, name: &str) -> Option<Workload> {
    let uid = format!("Kubernetes//Pod/{ns}/{name}");
    addresses(t).find_map(|(n, a)| match a.r#type {
        Some(address::Type::Workload(w)) if *n == uid => Some(w),
        _ => None,
    })
}

/// The service `ns/name`.
pub fn service(t: &Translation, ns: &str, name: &str) -> Option<Service> {
    let key = format!("{ns}/{name}.{ns}.svc.cluster.local");
    addresses(t).find_map(|(n, a)| match a.r#type {
        Some(address::Type::Service(s)) if *n == key => Some(s),
        _ => None,
    })
}

/// The authorization `ns/name`.
pub fn authorization(t: &Translation, ns: &str, name: &str) -> Option<Authorization> {
    let key = format!("{ns}/{name}");
    t.snapshot
        .resources
        .get(api::AUTHORIZATION_TYPE_URL)
        .and_then(|m| m.get(&key))
        .map(|r| api::unpack(&r.body).expect("decodes"))
}

/// Problems about `kind ns/name`.
pub fn problems_about<'a>(t: &'a Translation, kind: &str, name: &str) -> Vec<&'a Problem> {
    t.problems
        .iter()
        .filter(|p| p.kind == kind && p.name == name)
        .collect()
}

/// Number of resources of a type.
pub fn count(t: &Translation, type_url: &str) -> usize {
    t.snapshot.of_type(type_url).count()
}
