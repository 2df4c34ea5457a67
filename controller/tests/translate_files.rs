//! The file source against a real temporary directory.

use std::sync::Arc;
use std::time::Duration;

use controller::model::{Index, Object, ObjectKey};
use controller::source::FileSource;
use test_support::TempDir;
use test_support::manifests::{namespace, running_pod};

/// Pod `name` of `shop` running on node1 at `ip`.
fn pod(name: &str, ip: &str) -> String {
    running_pod("shop", name, &[], "node1", ip)
}

/// The ambient namespace `shop` and its Service `web`.
fn manifests() -> String {
    namespace("shop", true) + WEB_SERVICE
}

const WEB_SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80}]
";

fn keys(index: &Index) -> Vec<String> {
    index.iter().map(|(k, _)| k.to_string()).collect()
}

fn pod_ip(index: &Index, name: &str) -> String {
    match index
        .get(&ObjectKey::new("Pod", "shop", name))
        .map(|s| &s.object)
    {
        Some(Object::Pod(p)) => p.status.pod_ip.clone(),
        other => panic!("{other:?}"),
    }
}

fn origin_of(index: &Index, key: &ObjectKey) -> String {
    index.get(key).expect("present").origin.clone()
}

#[test]
fn scan_reconciles_with_disk() {
    let dir = TempDir::new("scan");
    dir.write("pods/shop/web-1.yaml", pod("web-1", "10.244.1.5"));
    dir.write("manifests/app.yaml", manifests());
    dir.write("manifests/notes.txt", "not config");
    dir.write("manifests/.app.yaml.swp", "garbage: [");
    let mut source = FileSource::new(vec![dir.path().to_owned()]);

    let first = source.scan();
    assert!(first.changed);
    assert_eq!(first.files, 2);
    assert_eq!(
        keys(&first.index),
        vec!["Namespace shop", "Pod shop/web-1", "Service shop/web"]
    );
    assert!(
        first.index.problems().is_empty(),
        "{:?}",
        first.index.problems()
    );

    // Nothing changed on disk: nothing new to publish.
    let again = source.scan();
    assert!(!again.changed);
    assert_eq!(keys(&again.index), keys(&first.index));

    // In-place rewrite (same size), as the sandbox does.
    dir.write("pods/shop/web-1.yaml", pod("web-1", "10.244.1.6"));
    let edited = source.scan();
    assert!(edited.changed);
    assert_eq!(pod_ip(&edited.index, "web-1"), "10.244.1.6");
    assert_eq!(edited.index.len(), 3, "no duplicates");

    // A broken edit keeps the file's last good objects and says why.
    dir.write(
        "manifests/app.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop\n",
    );
    let broken = source.scan();
    assert!(broken.changed, "the problems changed");
    assert_eq!(keys(&broken.index), keys(&first.index));
    let problems: Vec<String> = broken
        .index
        .problems()
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("app.yaml"), "{}", problems[0]);
    assert!(problems[0].contains("line"), "{}", problems[0]);
    assert!(
        problems[1].contains("keeping the last good version"),
        "{}",
        problems[1]
    );

    // Fixed: problems gone.
    dir.write("manifests/app.yaml", manifests());
    let fixed = source.scan();
    assert!(fixed.index.problems().is_empty());

    // Deleted: its objects go (no ghosts).
    dir.remove("pods/shop/web-1.yaml");
    let deleted = source.scan();
    assert!(deleted.changed);
    assert_eq!(
        keys(&deleted.index),
        vec!["Namespace shop", "Service shop/web"]
    );

    // New file redefining an object: one object, the later file wins, reported.
    dir.write(
        "manifests/zz-override.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {clusterIP: 10.96.0.99}\n",
    );
    let dup = source.scan();
    assert_eq!(dup.index.len(), 2);
    let key = ObjectKey::new("Service", "shop", "web");
    assert!(origin_of(&dup.index, &key).ends_with("zz-override.yaml"));
    assert_eq!(dup.index.problems().len(), 1);
    assert!(dup.index.problems()[0].message.contains("also defined in"));
}

#[test]
fn several_directories_and_missing_ones() {
    let a = TempDir::new("dir-a");
    let b = TempDir::new("dir-b");
    a.write("ns.yml", manifests());
    b.write("pods/p.json", r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"shop"},"status":{"phase":"Running","podIP":"10.244.1.9"}}"#);
    let missing = a.join("does-not-exist");
    let mut source = FileSource::new(vec![a.path().to_owned(), b.path().to_owned(), missing]);
    let r = source.scan();
    assert_eq!(r.files, 2);
    assert_eq!(r.index.len(), 3);
    assert_eq!(
        r.index.problems().len(),
        1,
        "the missing directory is reported"
    );
    assert!(
        r.index.problems()[0]
            .message
            .contains("cannot read config directory")
    );
}

#[test]
fn first_bad_version_loads_its_good_documents() {
    let dir = TempDir::new("partial");
    dir.write(
        "m.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: x}]}\n",
    );
    let mut source = FileSource::new(vec![dir.path().to_owned()]);
    let r = source.scan();
    assert_eq!(keys(&r.index), vec!["Namespace ok"]);
    assert_eq!(r.index.problems().len(), 1);
    assert_eq!(r.index.problems()[0].field, "spec.ports[0].port");
}

async fn next(rx: &mut tokio::sync::watch::Receiver<Arc<Index>>) -> Arc<Index> {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("published in time")
        .expect("sender alive");
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn watch_publishes_even_an_empty_first_scan() {
    let dir = TempDir::new("watch-empty");
    let source = FileSource::new(vec![dir.path().to_owned()]);
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Index::new()));
    let task = tokio::spawn(source.watch(tx, Duration::from_millis(20)));
    assert!(next(&mut rx).await.is_empty());
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

#[tokio::test]
async fn watch_publishes_changes() {
    let dir = TempDir::new("watch");
    dir.write("a.yaml", manifests());
    let source = FileSource::new(vec![dir.path().to_owned()]);
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Index::new()));
    let task = tokio::spawn(source.watch(tx, Duration::from_millis(20)));
    assert_eq!(next(&mut rx).await.len(), 2);
    dir.write("b.yaml", pod("web-2", "10.244.1.7"));
    assert_eq!(next(&mut rx).await.len(), 3);
    drop(rx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("watch ends when nobody listens")
        .expect("no panic");
}
