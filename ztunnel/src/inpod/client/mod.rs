//! The ZDS connection: connect (with backoff until the agent serves the socket), say hello,
//! answer every request, reconnect when the agent goes away; drain every pod on shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use api::zds::WorkloadRequest;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::InpodError;
use super::pod::Launcher;
use super::protocol;
use super::registry::Registry;
use crate::zds::ZdsStream;
use proxy_core::readiness::{BlockReady, Readiness};
use proxy_core::xds::Backoff;

/// How often proxies that failed to start are tried again (Istio's interval).
const RETRY_PENDING: Duration = Duration::from_secs(5);
/// First and largest wait between connection attempts.
const CONNECT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Pause after a connection ended in an error, so a misbehaving agent is not hammered.
const PAUSE_AFTER_ERROR: Duration = Duration::from_secs(1);
/// The readiness condition held until the snapshot is applied (Istio's name for it).
const READINESS_CONDITION: &str = "workload proxy manager";

/// Settings of the ZDS client.
#[derive(Clone, Debug)]
pub struct InpodSettings {
    /// The node agent's socket.
    pub zds_socket: PathBuf,
    /// How long a deleted pod's connections may run on.
    pub del_drain_deadline: Duration,
    /// How long every pod's connections may run on at shutdown.
    pub drain_deadline: Duration,
}

/// The ZDS client and the pods it serves.
pub struct InpodClient<L: Launcher> {
    settings: InpodSettings,
    registry: Registry<L>,
    readiness: Readiness,
}

/// Why a connection ended without error.
enum SessionEnd {
    /// The agent closed it; reconnect.
    AgentGone,
    /// Shutdown was asked for.
    Shutdown,
}

/// Holds the readiness condition while the pods are not all served.
struct ReadyGate {
    readiness: Readiness,
    block: Option<BlockReady>,
}

impl ReadyGate {
    fn new(readiness: Readiness) -> Self {
        let block = Some(readiness.block(READINESS_CONDITION));
        ReadyGate { readiness, block }
    }

    fn set(&mut self, ready: bool) {
        if ready {
            self.block = None;
        } else if self.block.is_none() {
            self.block = Some(self.readiness.block(READINESS_CONDITION));
        }
    }
}

impl<L: Launcher> InpodClient<L> {
    /// A client that starts pods with `launcher` and reports through `readiness`.
    pub fn new(settings: InpodSettings, launcher: L, readiness: Readiness) -> Self {
        let registry = Registry::new(launcher, settings.del_drain_deadline);
        InpodClient {
            settings,
            registry,
            readiness,
        }
    }

    /// The captured pods as JSON, for `/config_dump` ([`proxy_core::admin::AdminContext::extra_dump`]).
    pub fn dump(&self) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
        self.registry.dump_fn()
    }

    /// Serves the agent until `shutdown` turns true, then drains every pod concurrently with
    /// the shutdown deadline and returns once all are done.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut gate = ReadyGate::new(self.readiness.clone());
        loop {
            let stream = tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => break,
                stream = connect(&self.settings.zds_socket) => stream,
            };
            tracing::info!(socket = %self.settings.zds_socket.display(), "connected to the node agent");
            self.registry.connection_started();
            let end = self.session(&stream, &mut shutdown, &mut gate).await;
            // Closed before the pause below: the agent sees the end at once instead of a
            // socket that takes its requests and never answers.
            drop(stream);
            self.registry.connection_ended();
            // Not connected means changes may be missed: not ready until the next snapshot.
            gate.set(false);
            match end {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::AgentGone) => {
                    tracing::info!("node agent closed the connection; pods keep running");
                }
                Err(e) => {
                    tracing::warn!("ZDS connection ended: {e}; pods keep running");
                    tokio::select! {
                        _ = stopped(&mut shutdown) => break,
                        _ = tokio::time::sleep(PAUSE_AFTER_ERROR) => {}
                    }
                }
            }
        }
        tracing::info!("draining every pod proxy");
        self.registry.drain_all(self.settings.drain_deadline).await;
    }

    /// One connection: hello, then requests until the agent leaves, an error, or shutdown.
    async fn session(
        &mut self,
        stream: &ZdsStream,
        shutdown: &mut watch::Receiver<bool>,
        gate: &mut ReadyGate,
    ) -> Result<SessionEnd, InpodError> {
        stream.send(&protocol::hello(), None).await?;
        let mut retry_at: Option<Instant> = None;
        // One receive is kept across loop turns rather than restarted, so a retry timer firing
        // mid-receive can never lose a request.
        let recv = stream.recv::<WorkloadRequest>();
        tokio::pin!(recv);
        loop {
            let received = tokio::select! {
                biased;
                _ = stopped(shutdown) => return Ok(SessionEnd::Shutdown),
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                    if retry_at.is_some() =>
                {
                    self.registry.retry_pending().await;
                    retry_at = self
                        .registry
                        .has_pending()
                        .then(|| Instant::now() + RETRY_PENDING);
                    gate.set(self.registry.ready());
                    continue;
                }
                received = &mut recv => received,
            };
            recv.set(stream.recv());
            let (request, fd) = match received {
                Ok(received) => received,
                Err(e) if agent_gone(&e) => return Ok(SessionEnd::AgentGone),
                Err(e) => {
                    // Like Istio: report the unreadable request, then start afresh.
                    let reason = format!("unreadable request: {e}");
                    let answer = protocol::ack(&Err(InpodError::Protocol(reason.clone())));
                    let _ = stream.send(&answer, None).await;
                    return Err(InpodError::Protocol(reason));
                }
            };
            tracing::debug!(?request, with_fd = fd.is_some(), "ZDS request");
            let result = match protocol::parse(request, fd) {
                Ok(message) => self.registry.process(message).await,
                Err(e) => Err(e),
            };
            if let Err(InpodError::Start { .. }) = &result {
                retry_at.get_or_insert_with(|| Instant::now() + RETRY_PENDING);
            }
            // Readiness first, so it is current by the time the agent reads the answer.
            gate.set(self.registry.ready());
            stream.send(&protocol::ack(&result), None).await?;
            match result {
                Err(e @ (InpodError::Protocol(_) | InpodError::Io(_))) => return Err(e),
                Ok(()) | Err(InpodError::Start { .. }) => {}
            }
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone, which means the same).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn agent_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    matches!(e.kind(), UnexpectedEof | ConnectionReset | BrokenPipe)
}

/// Connects to the agent's socket, retrying with jittered exponential backoff until it
/// answers (the agent may start after the proxy, or be restarting).
async fn connect(path: &Path) -> ZdsStream {
    let mut backoff = Backoff::new(CONNECT_BACKOFF_MIN, CONNECT_BACKOFF_MAX);
    loop {
        match ZdsStream::connect(path).await {
            Ok(stream) => return stream,
            Err(e) => {
                let delay = backoff.next_delay();
                // Quick retries are the normal start-up race; only a lasting absence is news.
                if delay >= Duration::from_secs(1) {
                    tracing::warn!(socket = %path.display(), "node agent not reachable: {e}");
                } else {
                    tracing::debug!(socket = %path.display(), "node agent not reachable: {e}");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
