//! Bounded waits. The bounds only keep a broken build from hanging a test: nothing here
//! asserts how long anything takes.

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] looks.
const POLL: Duration = Duration::from_millis(20);
/// How many times [`eventually`] looks before it gives up: a minute.
const POLLS: u32 = 3000;
/// How long [`within`] waits.
const PATIENCE: Duration = Duration::from_secs(90);

/// Waits until `done` holds, looking every 20 ms; panics naming `what` after a minute.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..POLLS {
        if done() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("gave up waiting for {what}");
}

/// Awaits `future`; panics naming `what` if it has not completed after 90 s.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("gave up waiting for {what}"),
    }
}
