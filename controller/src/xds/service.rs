//! The gRPC face of the xDS server: authentication and stream setup.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use api::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use api::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::clients::Clients;
use super::stream::Stream;
use crate::ca::auth::{self, Authenticator};
use crate::translate::Published;

/// Tuning of the xDS server.
#[derive(Debug, Clone)]
pub struct XdsSettings {
    /// How long snapshot changes are coalesced before a push.
    pub debounce: Duration,
    /// Responses queued per stream before the stream waits for the client to read.
    pub outbound_capacity: usize,
}

impl Default for XdsSettings {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            outbound_capacity: 4,
        }
    }
}

/// The delta ADS service. Cheap to clone.
#[derive(Clone)]
pub struct XdsServer {
    snapshots: watch::Receiver<Published>,
    authenticator: Arc<dyn Authenticator>,
    config: XdsSettings,
    clients: Clients,
}

impl XdsServer {
    /// Serves the snapshots published on `snapshots` to callers `authenticator` accepts; a
    /// stream opened before the first snapshot waits for it.
    pub fn new(
        snapshots: watch::Receiver<Published>,
        authenticator: Arc<dyn Authenticator>,
        config: XdsSettings,
    ) -> Self {
        Self {
            snapshots,
            authenticator,
            config,
            clients: Clients::default(),
        }
    }

    /// Keeps the connected clients' sync state in `clients` (for `/debug/syncz`).
    pub fn with_clients(mut self, clients: Clients) -> Self {
        self.clients = clients;
        self
    }

    /// The tonic service to add to a server.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
    }
}

/// The response stream of one client; counts itself in the connected-clients gauge.
pub struct ResponseStream {
    inner: ReceiverStream<Result<DeltaDiscoveryResponse, Status>>,
}

impl ResponseStream {
    fn new(inner: ReceiverStream<Result<DeltaDiscoveryResponse, Status>>) -> Self {
        crate::metrics::global().xds.connected();
        Self { inner }
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        crate::metrics::global().xds.disconnected();
    }
}

impl tokio_stream::Stream for ResponseStream {
    type Item = Result<DeltaDiscoveryResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

type SotwStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsServer {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "state-of-the-world ADS is not served; use DeltaAggregatedResources",
        ))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let caller =
            auth::authenticate_request(self.authenticator.as_ref(), &request, "xDS stream").await?;
        let (tx, rx) = mpsc::channel(self.config.outbound_capacity.max(1));
        let entry = self.clients.connect(&caller.identity.to_string());
        tokio::spawn(Stream::run(
            entry,
            caller.identity.to_string(),
            request.into_inner(),
            self.snapshots.clone(),
            tx,
            self.config.debounce,
        ));
        Ok(Response::new(ResponseStream::new(ReceiverStream::new(rx))))
    }
}
