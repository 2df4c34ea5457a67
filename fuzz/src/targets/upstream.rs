//! An in-process stand-in for the waypoint's endpoints: every service has the fixture's two
//! reviews pods; they read the request body and answer by path, so retries, resets and
//! refusals are reachable from the request alone.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use waypoint::engine::{
    Body, BoxError, Caller, EndpointInfo, SendFuture, UpstreamClient, UpstreamError, WorkloadMeta,
};

use super::support::client_identity;

/// Most request body bytes an endpoint reads.
const BODY_LIMIT: usize = 1 << 20;

/// The endpoints of every service.
pub(crate) struct Endpoints;

/// An upstream for the waypoint engine.
pub(crate) fn upstream() -> Arc<dyn UpstreamClient> {
    Arc::new(Endpoints)
}

/// The caller of every request.
pub(crate) fn caller() -> Caller {
    Caller {
        identity: Some(client_identity()),
        ip: IpAddr::from([10, 244, 1, 5]),
    }
}

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| -> BoxError { match never {} })
        .boxed()
}

impl UpstreamClient for Endpoints {
    fn endpoints(&self, _namespace: &str, _hostname: &str, _port: u16) -> Vec<EndpointInfo> {
        [
            ("Kubernetes//Pod/shop/reviews-v1-1", [10, 244, 1, 10]),
            ("Kubernetes//Pod/shop/reviews-v2-1", [10, 244, 2, 10]),
        ]
        .into_iter()
        .map(|(uid, ip)| EndpointInfo {
            uid: uid.to_owned(),
            address: SocketAddr::from((ip, 8080)),
        })
        .collect()
    }

    fn service_by_vip(&self, _ip: IpAddr) -> Option<(String, String)> {
        None
    }

    fn send(
        &self,
        _endpoint: &EndpointInfo,
        _caller: &Caller,
        request: Request<Body>,
    ) -> SendFuture {
        Box::pin(answer(request))
    }

    fn workload(&self, ip: IpAddr) -> Option<WorkloadMeta> {
        Some(WorkloadMeta {
            workload: format!("pod-{ip}"),
            namespace: "shop".into(),
            canonical_service: "reviews".into(),
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
            identity: Some(client_identity()),
        })
    }

    fn state_version(&self) -> Option<u64> {
        Some(1)
    }
}

/// Reads the body (up to [`BODY_LIMIT`]), then answers: `/reset` breaks the exchange,
/// `/refuse` the connection, `/fail` is 503, anything else 200 with the path as body.
async fn answer(request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
    let path = request.uri().path().to_owned();
    let mut body = request.into_body();
    let mut read = 0;
    while read < BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(e)) => return Err(UpstreamError::Request(e.to_string())),
            None => break,
        }
    }
    if path.contains("/reset") {
        return Err(UpstreamError::Request("reset by the endpoint".into()));
    }
    if path.contains("/refuse") {
        return Err(UpstreamError::Connect("refused".into()));
    }
    let status = if path.contains("/fail") {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = Response::new(full(path));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-body-bytes", read.to_string().parse().expect("digits"));
    Ok(response)
}
