//! The middle of the controller's pipeline: every new [`Index`] is translated (off the async
//! workers) and the snapshot published when it changed, with the problems found for status
//! conditions.
//!
//! Nothing is published before the first translation completes, and a translation that
//! panics publishes nothing: the last good snapshot keeps being served, the failure is logged
//! and counted, and `/ready` says why until a later index translates again.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::Readiness;
use crate::model::{Index, Problem};
use crate::translate::{Published, Translation, Translator};

/// Turns an index into a translation. [`Translator`] is the real one; tests substitute their
/// own to inject failures. Cloned before each run, so that a failed run leaves no trace.
pub trait Translate: Clone + Send + 'static {
    /// Translates `index`.
    fn translate(&mut self, index: &Index) -> Translation;
}

impl Translate for Translator {
    fn translate(&mut self, index: &Index) -> Translation {
        Translator::translate(self, index)
    }
}

/// Where the pipeline's results go.
pub struct Outputs {
    /// The snapshot served over xDS.
    pub snapshots: watch::Sender<Published>,
    /// The problems of the last translation (for status conditions); `None` before the first.
    pub problems: watch::Sender<Option<Arc<Vec<Problem>>>>,
    /// Ready once the first snapshot is published; not ready while translation fails.
    pub readiness: Readiness,
}

/// Translates every new index until the index sender goes away.
pub async fn translate_loop<T: Translate>(
    mut index_rx: watch::Receiver<Arc<Index>>,
    outputs: Outputs,
    mut translator: T,
) {
    let mut reported: Option<Vec<Problem>> = None;
    // The first index is translated as soon as it is sent; the channel's initial value is
    // the empty index of a source that has not read anything yet.
    while index_rx.changed().await.is_ok() {
        let index = index_rx.borrow_and_update().clone();
        let attempt = translator.clone();
        // Translation is CPU work over the whole index: keep it off the async workers.
        let joined = tokio::task::spawn_blocking(move || run(attempt, &index)).await;
        let (done, translation) = match joined {
            Ok(Ok(done)) => done,
            Ok(Err(reason)) => {
                failed(&outputs.readiness, reason);
                continue;
            }
            Err(e) => {
                failed(&outputs.readiness, format!("translation task failed: {e}"));
                continue;
            }
        };
        translator = done;
        if reported.as_ref() != Some(&translation.problems) {
            for problem in &translation.problems {
                tracing::warn!("{problem}");
            }
            outputs
                .problems
                .send_replace(Some(Arc::new(translation.problems.clone())));
            reported = Some(translation.problems);
        }
        publish(&outputs, translation.snapshot);
    }
}

/// Runs one translation, catching a panic as the reason it failed.
fn run<T: Translate>(mut translator: T, index: &Index) -> Result<(T, Translation), String> {
    match catch_unwind(AssertUnwindSafe(|| translator.translate(index))) {
        Ok(translation) => Ok((translator, translation)),
        Err(panic) => Err(format!("translation panicked: {}", panic_message(&*panic))),
    }
}

/// Publishes `snapshot` if it differs from the one served, and marks the controller ready.
fn publish(outputs: &Outputs, snapshot: crate::translate::Snapshot) {
    let resources = snapshot.len();
    let snapshot = Arc::new(snapshot);
    outputs.snapshots.send_if_modified(|current| {
        if current.as_deref() == Some(&*snapshot) {
            false
        } else {
            *current = Some(snapshot);
            true
        }
    });
    if outputs.readiness.status().is_err() {
        tracing::info!(resources, "configuration translated; serving it");
    }
    outputs.readiness.recovered();
    outputs.readiness.set_ready();
}

/// Records a failed translation: the last snapshot stays, the controller reports not ready.
fn failed(readiness: &Readiness, reason: String) {
    tracing::error!(%reason, "translation failed; the last good configuration stays in force");
    crate::metrics::global().translation_failed();
    readiness.set_failure(reason);
}

/// The text of a panic payload (a `&str` or `String` for `panic!` with a message).
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests;
