//! What every target's harness shares: a paused clock and the peer's identity.

use std::time::Duration;

/// How long (on the paused clock) a peer is given to answer or close once the input is
/// sent: far above any timeout the code under test may set, so only a hang reaches it.
pub(crate) const PATIENCE: Duration = Duration::from_secs(24 * 3600);

/// A single-threaded runtime whose clock is paused: timers fire as soon as nothing else can
/// run, so timeouts and retries cost no real time and every run is the same.
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds")
}

/// The identity of the peer the proxies see in every target.
pub(crate) fn client_identity() -> ::hbone::Identity {
    ::hbone::Identity::new("cluster.local", "shop", "productpage").expect("a valid identity")
}
