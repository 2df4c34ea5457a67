//! Pins the gRPC surface: service names, and method paths as a client that
//! was not generated from our .proto files would spell them. Real servers on
//! loopback answer raw requests sent to the upstream paths.

use std::net::SocketAddr;
use std::pin::Pin;

use api::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use api::ca::{IstioCertificateRequest, IstioCertificateResponse};
use api::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use api::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const ADS_SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const CA_SERVICE: &str = "istio.v1.auth.IstioCertificateService";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers each CSR with a fixed two-certificate chain.
struct FakeCa;

#[tonic::async_trait]
impl IstioCertificateService for FakeCa {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let req = request.into_inner();
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: vec![format!("leaf for {}", req.csr), "root".into()],
        }))
    }
}

/// Answers the first delta request with one response echoing its type URL.
struct FakeAds;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeAds {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("state of the world"))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty stream"))?;
        let reply = DeltaDiscoveryResponse {
            type_url: first.type_url,
            nonce: "n-1".into(),
            ..Default::default()
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(reply)))))
    }
}

/// Serves `router` on an ephemeral loopback port and returns a channel to it.
async fn serve(router: tonic::transport::server::Router) -> Channel {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[test]
fn service_names() {
    assert_eq!(
        <AggregatedDiscoveryServiceServer<FakeAds> as NamedService>::NAME,
        ADS_SERVICE
    );
    assert_eq!(
        <IstioCertificateServiceServer<FakeCa> as NamedService>::NAME,
        CA_SERVICE
    );
}

#[tokio::test]
async fn create_certificate_at_upstream_path() {
    let channel =
        serve(Server::builder().add_service(IstioCertificateServiceServer::new(FakeCa))).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path =
        PathAndQuery::from_static("/istio.v1.auth.IstioCertificateService/CreateCertificate");
    let request = IstioCertificateRequest {
        csr: "CSR".into(),
        validity_duration: 3600,
        metadata: None,
    };
    let response: Response<IstioCertificateResponse> = grpc
        .unary(Request::new(request), path, ProstCodec::default())
        .await
        .unwrap();
    assert_eq!(response.into_inner().cert_chain, ["leaf for CSR", "root"]);
}

#[tokio::test]
async fn delta_ads_at_upstream_path() {
    let channel =
        serve(Server::builder().add_service(AggregatedDiscoveryServiceServer::new(FakeAds))).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources",
    );
    let first = DeltaDiscoveryRequest {
        type_url: api::ADDRESS_TYPE_URL.into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    };
    let response: Response<Streaming<DeltaDiscoveryResponse>> = grpc
        .streaming(
            Request::new(tokio_stream::iter([first])),
            path,
            ProstCodec::default(),
        )
        .await
        .unwrap();
    let replies: Vec<_> = response.into_inner().collect().await;
    assert_eq!(replies.len(), 1);
    let reply = replies.into_iter().next().unwrap().unwrap();
    assert_eq!(reply.type_url, api::ADDRESS_TYPE_URL);
    assert_eq!(reply.nonce, "n-1");
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let channel =
        serve(Server::builder().add_service(AggregatedDiscoveryServiceServer::new(FakeAds))).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    // The v2 name must not be served: clients of the old API get a clear error.
    let path = PathAndQuery::from_static(
        "/envoy.service.discovery.v2.AggregatedDiscoveryService/DeltaAggregatedResources",
    );
    let result: Result<Response<Streaming<DeltaDiscoveryResponse>>, Status> = grpc
        .streaming(
            Request::new(tokio_stream::iter([DeltaDiscoveryRequest::default()])),
            path,
            ProstCodec::default(),
        )
        .await;
    assert_eq!(result.unwrap_err().code(), tonic::Code::Unimplemented);
}
