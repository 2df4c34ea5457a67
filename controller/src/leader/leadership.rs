//! Whether this replica leads, as the writers read it.

use tokio::sync::watch;

/// A view of this replica's leadership: `true` while it holds the Lease.
///
/// Writers check [`Leadership::is_leader`] before every write, so a replica that stepped down
/// stops writing at once, and wait on [`Leadership::changed`] to resume when it leads again.
/// A clone sees changes made after it was made, not before.
#[derive(Debug)]
pub struct Leadership {
    receiver: watch::Receiver<bool>,
}

impl Clone for Leadership {
    fn clone(&self) -> Self {
        Self::from_receiver(self.receiver.clone())
    }
}

impl Leadership {
    /// Always the leader: file mode, where no other replica exists.
    pub fn always() -> Self {
        // The sender is dropped: the value stays `true` and `changed` never completes.
        let (_, receiver) = watch::channel(true);
        Self { receiver }
    }

    /// Follows what an election publishes.
    pub fn from_receiver(mut receiver: watch::Receiver<bool>) -> Self {
        receiver.mark_unchanged();
        Self { receiver }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Completes when leadership changes; never once the election has ended (its last word
    /// stands).
    pub async fn changed(&mut self) {
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Completes once this replica leads (at once when it already does).
    pub async fn acquired(&mut self) {
        while !*self.receiver.borrow_and_update() {
            self.changed().await;
        }
    }
}
