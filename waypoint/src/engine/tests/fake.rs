//! An in-process [`UpstreamClient`] that records what it is sent and answers as each endpoint
//! is told to, and builders for the waypoint config the tests compile.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;

use crate::engine::{
    Body, Caller, EndpointInfo, UpstreamClient, UpstreamError, WorkloadMeta, body,
};

/// How an endpoint answers.
#[derive(Clone)]
pub enum Behavior {
    /// With this status.
    Status(u16),
    /// With `status` for the first `n` requests, then 200.
    FailFirst(usize, u16),
    /// Never.
    Hang,
    /// With 200 once a permit is available (the test controls when).
    Gate(Arc<Semaphore>),
    /// Refuses the connection.
    Refuse,
    /// Reads the request, then resets the stream without an answer.
    Reset,
    /// A gRPC server: 200 with `grpc-status: 0` (a trailers-only answer).
    GrpcOk,
}

/// One request an endpoint received.
#[derive(Clone, Debug)]
pub struct Call {
    pub uid: String,
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The fake transport.
#[derive(Default)]
pub struct Fake {
    vips: HashMap<IpAddr, (String, String)>,
    endpoints: HashMap<String, Vec<EndpointInfo>>,
    behavior: Mutex<HashMap<SocketAddr, Behavior>>,
    served: Mutex<HashMap<SocketAddr, usize>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Fake {
    /// A fake with service `hostname` at `vip`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a service VIP.
    pub fn service(mut self, vip: &str, namespace: &str, hostname: &str) -> Self {
        self.vips
            .insert(vip.parse().unwrap(), (namespace.into(), hostname.into()));
        self
    }

    /// Adds an endpoint of `hostname` answering 200.
    pub fn endpoint(mut self, hostname: &str, uid: &str, addr: &str) -> Self {
        let address: SocketAddr = addr.parse().unwrap();
        self.endpoints
            .entry(hostname.into())
            .or_default()
            .push(EndpointInfo {
                uid: uid.into(),
                address,
            });
        self.behavior
            .lock()
            .unwrap()
            .insert(address, Behavior::Status(200));
        self
    }

    /// Changes how an endpoint answers.
    pub fn set(&self, addr: &str, b: Behavior) {
        self.behavior
            .lock()
            .unwrap()
            .insert(addr.parse().unwrap(), b);
    }

    /// Requests received, per endpoint uid.
    pub fn count_by_uid(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for c in self.calls.lock().unwrap().iter() {
            *out.entry(c.uid.clone()).or_default() += 1;
        }
        out
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Attempts sent to any endpoint, whether or not their request arrived whole.
    pub fn attempts(&self) -> usize {
        self.served.lock().unwrap().values().sum()
    }
}

impl UpstreamClient for Fake {
    fn endpoints(&self, _namespace: &str, hostname: &str, _port: u16) -> Vec<EndpointInfo> {
        self.endpoints.get(hostname).cloned().unwrap_or_default()
    }

    fn service_by_vip(&self, ip: IpAddr) -> Option<(String, String)> {
        self.vips.get(&ip).cloned()
    }

    fn send(
        &self,
        endpoint: &EndpointInfo,
        _caller: &Caller,
        request: Request<Body>,
    ) -> crate::engine::SendFuture {
        let behavior = self
            .behavior
            .lock()
            .unwrap()
            .get(&endpoint.address)
            .cloned()
            .unwrap_or(Behavior::Status(200));
        let served = {
            let mut s = self.served.lock().unwrap();
            let n = s.entry(endpoint.address).or_default();
            *n += 1;
            *n
        };
        let endpoint = endpoint.clone();
        let (parts, body) = request.into_parts();
        let host = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let mut call = Call {
            uid: endpoint.uid.clone(),
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            host,
            headers: parts.headers,
            body: Bytes::new(),
        };
        if let Behavior::Refuse = behavior {
            return Box::pin(async move { Err(UpstreamError::Connect("refused".into())) });
        }
        let record = self.calls.clone();
        Box::pin(async move {
            // As an HTTP client does, a request whose body fails is abandoned.
            call.body = body
                .collect()
                .await
                .map_err(|e| UpstreamError::Request(format!("request body: {e}")))?
                .to_bytes();
            record.lock().unwrap().push(call);
            let status = match behavior {
                Behavior::GrpcOk => {
                    let mut resp = Response::new(body::empty());
                    resp.headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("0"));
                    return Ok(resp);
                }
                Behavior::Status(s) => s,
                Behavior::FailFirst(n, s) => {
                    if served <= n {
                        s
                    } else {
                        200
                    }
                }
                Behavior::Hang => {
                    std::future::pending::<()>().await;
                    200
                }
                Behavior::Gate(gate) => {
                    let _permit = gate.acquire().await;
                    200
                }
                Behavior::Reset => return Err(UpstreamError::Request("stream reset".into())),
                Behavior::Refuse => unreachable!(),
            };
            let mut resp = Response::new(body::full(format!("from {}", endpoint.uid)));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(resp)
        })
    }

    fn state_version(&self) -> Option<u64> {
        // Endpoints and workloads are fixed when the fake is built.
        Some(0)
    }

    fn workload(&self, ip: IpAddr) -> Option<WorkloadMeta> {
        let uid = self
            .endpoints
            .values()
            .flatten()
            .find(|e| e.address.ip() == ip)?
            .uid
            .clone();
        let name = uid.rsplit('/').next().unwrap_or_default().to_string();
        Some(WorkloadMeta {
            workload: name.clone(),
            namespace: "shop".into(),
            canonical_service: name,
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
            identity: None,
        })
    }
}
