//! A delta ADS stream as a node proxy opens it, driven request by request.

use api::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::grpc::with_token;

/// One delta ADS stream: requests go out as the test sends them, responses are read as it
/// asks for them.
pub struct AdsStream {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl AdsStream {
    /// Opens a stream on `channel`, authenticated with the bearer `token`.
    pub async fn open(channel: Channel, token: &str) -> Result<Self, tonic::Status> {
        let (requests, outgoing) = mpsc::channel(16);
        let responses = AggregatedDiscoveryServiceClient::new(channel)
            .delta_aggregated_resources(with_token(ReceiverStream::new(outgoing), token))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    /// Sends `request`; panics if the stream is gone.
    pub async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests
            .send(request)
            .await
            .expect("the ADS stream is open");
    }

    /// Subscribes to `type_url` (wildcard, no names) as node `node_id`, holding `initial`
    /// (name, version) resources already.
    pub async fn subscribe(&self, node_id: &str, type_url: &str, initial: &[(&str, &str)]) {
        self.send(DeltaDiscoveryRequest {
            node: Some(api::core::Node {
                id: node_id.into(),
                ..Default::default()
            }),
            type_url: type_url.into(),
            initial_resource_versions: initial
                .iter()
                .map(|(name, version)| (name.to_string(), version.to_string()))
                .collect(),
            ..Default::default()
        })
        .await;
    }

    /// ACKs `response`.
    pub async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// The next response; `None` when the stream ended.
    pub async fn message(&mut self) -> Result<Option<DeltaDiscoveryResponse>, tonic::Status> {
        self.responses.message().await
    }
}
