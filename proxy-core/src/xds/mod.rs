//! The delta ADS client: subscribes to workloads/services and authorizations, applies them to
//! the [`ProxyState`], ACKs or NACKs each response, and reconnects with backoff, sending the
//! versions it holds so the controller sends only what changed. The state is kept while the
//! controller is unreachable. Callers may add [`NamedSubscription`]s to other types (a
//! waypoint's own configuration) on the same stream.

mod access_logging;
mod backoff;
mod handler;
mod held;
mod named;
mod node;

pub use access_logging::access_logging_subscription;
pub use backoff::Backoff;
pub use named::{NamedSubscription, ResourceHandler};
pub use node::{ClientIdentity, ROLE, node_id};

use api::discovery::DeltaDiscoveryRequest;
use api::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::control::{ControlError, ControlPlane};
use crate::settings::ControlPlaneSettings;
use crate::state::ProxyState;
use handler::Tracker;

/// Requests (ACKs) queued for the controller before the client waits for it to read.
const REQUEST_QUEUE: usize = 16;
/// Largest response accepted; a full push for a big cluster is a few megabytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum XdsError {
    /// The controller could not be reached.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The stream failed.
    #[error("stream failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// The controller ended the stream.
    #[error("the controller closed the stream")]
    Closed,
}

/// How a session ended.
enum End {
    /// Shutdown was requested.
    Shutdown,
    /// The stream failed or was never established.
    Failed(XdsError),
}

/// Runs the client until `shutdown` fires; never returns early on controller errors
/// (it reconnects). A dropped `shutdown` sender counts as shutdown.
pub async fn run(
    control: ControlPlaneSettings,
    client: ClientIdentity,
    state: ProxyState,
    shutdown: watch::Receiver<bool>,
) {
    run_with(control, client, state, Vec::new(), shutdown).await
}

/// Like [`run`], also subscribing to `subscriptions` (by name, not wildcard) and handing
/// their resources to their handlers; a handler's refusal NACKs the response.
pub async fn run_with(
    control: ControlPlaneSettings,
    client: ClientIdentity,
    state: ProxyState,
    subscriptions: Vec<NamedSubscription>,
    mut shutdown: watch::Receiver<bool>,
) {
    let node = node::node(&client);
    let mut tracker = Tracker::with_subscriptions(subscriptions);
    let mut backoff = Backoff::default();
    while !*shutdown.borrow() {
        let mut received = false;
        let end = session(
            &control,
            &node,
            &state,
            &mut tracker,
            &mut received,
            &mut shutdown,
        )
        .await;
        let error = match end {
            End::Shutdown => break,
            End::Failed(error) => error,
        };
        if received {
            // The stream worked: start over from the shortest delay.
            backoff.reset();
            tracing::info!(address = %control.address, %error, "disconnected from the controller");
        } else {
            tracing::warn!(address = %control.address, %error, "controller unavailable");
        }
        let delay = backoff.next_delay();
        tracing::debug!(?delay, "reconnecting to the controller after a delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    tracing::info!("xDS client stopped");
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves when shutdown is requested or can no longer be (sender gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One connection: connect, subscribe, then apply and answer responses until the stream
/// ends. Sets `received` once a response has arrived.
async fn session(
    control: &ControlPlaneSettings,
    node: &api::core::Node,
    state: &ProxyState,
    tracker: &mut Tracker,
    received: &mut bool,
    shutdown: &mut watch::Receiver<bool>,
) -> End {
    let plane = tokio::select! {
        plane = ControlPlane::connect(control) => match plane {
            Ok(plane) => plane,
            Err(e) => return End::Failed(e.into()),
        },
        () = stopped(shutdown) => return End::Shutdown,
    };
    let (requests, queue) =
        mpsc::channel::<DeltaDiscoveryRequest>(REQUEST_QUEUE + tracker.request_count());
    for request in tracker.initial_requests(node) {
        // The queue is empty and larger than the number of types.
        let _ = requests.try_send(request);
    }
    let mut request = tonic::Request::new(ReceiverStream::new(queue));
    plane.authorize(&mut request);
    let mut grpc = AggregatedDiscoveryServiceClient::new(plane.channel.clone())
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut responses = tokio::select! {
        opened = grpc.delta_aggregated_resources(request) => match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return End::Failed(status.into()),
        },
        () = stopped(shutdown) => return End::Shutdown,
    };
    tracing::info!(address = %control.address, "connected to the controller");
    // Removals held back on an earlier stream that came due while disconnected.
    tracker.expire(state, tokio::time::Instant::now());
    tracker.stream_opened();
    loop {
        let deadline = tracker.next_deadline();
        let message = tokio::select! {
            message = responses.message() => message,
            () = stopped(shutdown) => return End::Shutdown,
            () = sleep_until(deadline), if deadline.is_some() => {
                tracker.expire(state, tokio::time::Instant::now());
                continue;
            }
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => return End::Failed(XdsError::Closed),
            Err(status) => return End::Failed(status.into()),
        };
        *received = true;
        let nonce = response.nonce.clone();
        let (reply, outcome) = tracker.handle(state, response);
        if outcome.rejected.is_empty() {
            tracing::debug!(
                type_url = %outcome.type_url, %nonce, applied = outcome.applied,
                removed = outcome.removed, held_back = outcome.deferred,
                "applied xDS response (ACK)"
            );
        } else {
            tracing::warn!(
                type_url = %outcome.type_url, %nonce, applied = outcome.applied,
                removed = outcome.removed, rejected = outcome.rejected.len(),
                "applied xDS response in part (NACK)"
            );
        }
        if requests.send(reply).await.is_err() {
            // The transport dropped the request stream: the call is over.
            return End::Failed(XdsError::Closed);
        }
    }
}
