//! Reading manifests: multi-document YAML, `List`, bad documents.

#[path = "translate_common.rs"]
mod common;

use common::*;
use controller::model::{Object, ObjectKey};

#[test]
fn bad_documents_are_reported_and_skipped() {
    let index = index_of(&["bad-yaml.yaml"]);
    let keys: Vec<String> = index.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(
        keys,
        vec![
            "HTTPRoute good-ns/reviews",
            "Namespace good-ns",
            "Service good-ns/from-list"
        ]
    );
    let problems: Vec<String> = index.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    // Syntax error: file, document and line.
    assert!(
        problems[0].starts_with("fixtures/bad-yaml.yaml: "),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("document 2"), "{}", problems[0]);
    assert!(
        problems[0].contains("(line 15, column 1)"),
        "{}",
        problems[0]
    );
    // Type error: kind/name, field path, line and column.
    assert_eq!(
        problems[1],
        "fixtures/bad-yaml.yaml: Service good-ns/typed-wrong: field spec.ports[0].port: document 3: invalid type: string \"eighty\", expected u16 (line 23, column 11); document skipped"
    );
    // A bad List item names its index.
    let p = &index.problems()[2];
    assert_eq!(p.field, "items[2].spec.containers");
    assert_eq!((p.kind.as_str(), p.name.as_str()), ("Pod", "bad-item"));
}

#[test]
fn raw_kinds_are_kept_verbatim() {
    let index = index_of(&["bad-yaml.yaml"]);
    let route = index
        .get(&ObjectKey::new("HTTPRoute", "good-ns", "reviews"))
        .expect("stored");
    match &route.object {
        Object::Raw { kind, value, .. } => {
            assert_eq!(kind, "HTTPRoute");
            assert_eq!(value["spec"]["rules"][0]["backendRefs"][0]["port"], 9080);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(index.of_kind("HTTPRoute").count(), 1);
}

#[test]
fn defaults_and_duplicates() {
    let a = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.1}\n";
    let b = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\nspec: {clusterIP: 10.96.0.2}\n";
    let index = controller::model::Index::from_origins(vec![
        ("a.yaml".into(), objects("a.yaml", a), vec![]),
        ("b.yaml".into(), objects("b.yaml", b), vec![]),
    ]);
    assert_eq!(index.len(), 1, "no duplicates");
    let s = index
        .get(&ObjectKey::new("Service", "default", "s"))
        .unwrap();
    assert_eq!(s.origin, "b.yaml", "later origin wins");
    assert_eq!(index.problems().len(), 1);
    assert_eq!(
        index.problems()[0].to_string(),
        "b.yaml: Service default/s: also defined in a.yaml; the definition here wins"
    );
}

#[test]
fn json_and_empty_documents() {
    let json = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "j", "labels": {"istio.io/dataplane-mode": "ambient"}}}"#;
    let parsed = controller::model::parse_documents("n.json", json, true);
    assert!(parsed.problems.is_empty());
    assert_eq!(parsed.objects.len(), 1);
    let parsed =
        controller::model::parse_documents("e.yaml", "---\n# nothing\n---\n\n---\n", false);
    assert!(parsed.problems.is_empty() && parsed.objects.is_empty());
}

#[test]
fn replacing_an_origin_leaves_no_ghosts() {
    let two = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
    let one = "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
    let mut index = controller::model::Index::new();
    index.replace_origin("kube", objects("kube", two), vec![]);
    index.replace_origin("f.yaml", objects("f.yaml", one), vec![]);
    assert_eq!(index.len(), 2);
    assert_eq!(index.problems().len(), 1, "b is defined twice");
    index.replace_origin("kube", objects("kube", one), vec![]);
    let keys: Vec<String> = index.iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(keys, vec!["Namespace b"]);
    index.remove_origin("f.yaml");
    assert_eq!(index.len(), 1);
    assert!(index.problems().is_empty());
    assert_eq!(index.origins().collect::<Vec<_>>(), vec!["kube"]);
}
