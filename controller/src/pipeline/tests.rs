use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::model::parse_documents;
use crate::translate::{Snapshot, TranslateOptions};

/// The real translator, except that an index holding a Namespace named `panic` makes it
/// panic: a stand-in for any bug in translation.
#[derive(Clone)]
struct Faulty(Translator);

impl Translate for Faulty {
    fn translate(&mut self, index: &Index) -> Translation {
        if index.namespace("panic").is_some() {
            panic!("injected translation failure");
        }
        self.0.translate(index)
    }
}

/// An index of `yaml` (which must parse cleanly).
fn index(yaml: &str) -> Arc<Index> {
    let parsed = parse_documents("test.yaml", yaml, false);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    Arc::new(Index::from_origins(vec![(
        "test.yaml".into(),
        parsed.objects,
        Vec::new(),
    )]))
}

/// A Service named `name` in `shop`.
fn service(name: &str, ip: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
    )
}

/// A Namespace named `panic`, which [`Faulty`] cannot translate.
const POISON: &str = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: panic}\n";

/// A running loop and the ends of its channels.
struct Running {
    index: watch::Sender<Arc<Index>>,
    snapshots: watch::Receiver<Published>,
    problems: watch::Receiver<Option<Arc<Vec<Problem>>>>,
    readiness: Readiness,
}

fn start() -> Running {
    let (index, index_rx) = watch::channel(Arc::new(Index::new()));
    let (snapshots_tx, snapshots) = watch::channel(None);
    let (problems_tx, problems) = watch::channel(None);
    let readiness = Readiness::default();
    tokio::spawn(translate_loop(
        index_rx,
        Outputs {
            snapshots: snapshots_tx,
            problems: problems_tx,
            readiness: readiness.clone(),
        },
        Faulty(Translator::new(TranslateOptions::default())),
    ));
    Running {
        index,
        snapshots,
        problems,
        readiness,
    }
}

impl Running {
    fn served(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }

    /// Sends `yaml` and waits for the snapshot it translates to.
    async fn publish(&mut self, yaml: &str) -> Arc<Snapshot> {
        self.index.send_replace(index(yaml));
        self.snapshots.changed().await.expect("loop running");
        self.served().expect("a snapshot once changed")
    }
}

/// Waits (bounded) until `condition` holds; translation runs on a blocking thread.
async fn until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn nothing_is_served_before_the_first_translation() {
    let mut running = start();
    tokio::task::yield_now().await;
    assert!(running.served().is_none());
    assert_eq!(
        running.readiness.status(),
        Err("no configuration translated yet".to_owned())
    );

    let snapshot = running.publish(&service("web", "10.96.0.10")).await;
    assert_eq!(snapshot.of_type(api::ADDRESS_TYPE_URL).count(), 1);
    assert_eq!(running.readiness.status(), Ok(()));
    assert_eq!(
        running.problems.borrow().as_deref().map(Vec::len),
        Some(0),
        "problems are published with the first translation"
    );
}

#[tokio::test]
async fn a_panicking_translation_keeps_the_last_snapshot_and_reports_not_ready_until_recovered() {
    let mut running = start();
    let good = running.publish(&service("web", "10.96.0.10")).await;

    // A panic: the snapshot stays, the controller says why it is not ready.
    running.index.send_replace(index(
        &(service("web", "10.96.0.10") + &service("api", "10.96.0.11") + POISON),
    ));
    let readiness = running.readiness.clone();
    until("the failure is reported", || readiness.status().is_err()).await;
    let reason = running.readiness.status().unwrap_err();
    assert!(
        reason.contains("panicked") && reason.contains("injected translation failure"),
        "{reason}"
    );
    let served = running.served().expect("still serving");
    assert!(Arc::ptr_eq(&served, &good), "the last good snapshot stays");
    assert!(!running.snapshots.has_changed().unwrap());

    // The next good input is translated with the translator's memory intact, and the
    // controller is ready again.
    let recovered = running
        .publish(&(service("web", "10.96.0.10") + &service("api", "10.96.0.11")))
        .await;
    assert_eq!(recovered.of_type(api::ADDRESS_TYPE_URL).count(), 2);
    assert_eq!(running.readiness.status(), Ok(()));
}
