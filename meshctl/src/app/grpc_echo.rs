//! `meshctl app grpc-echo`: a gRPC server (h2c) of the `mesh.echo.v1.Echo` service, with the
//! four call kinds. Each request says how to answer: a gRPC status instead of a reply (for
//! every call, or for the first N calls of a key, counted per server: what retries need), and
//! a delay, cut short by the caller's deadline (`grpc-timeout`) with DEADLINE_EXCEEDED as a
//! gRPC server's handler does when its context expires.
//!
//! Served with hyper directly rather than tonic's server, whose own deadline handling answers
//! an expired `grpc-timeout` with CANCELLED: the app answers it itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::echo::echo_server::{Echo, EchoServer};
use api::echo::{EchoReply, EchoRequest};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tonic::codegen::Service as _;
use tonic::codegen::tokio_stream::StreamExt as _;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::error::AppError;
use super::identity::Identity;
use super::listen::{MAX_CONNECTIONS, accept_bounded, bind};
use controller::shutdown::signal as shutdown_signal;

/// The server's default port (gRPC's customary one).
pub const DEFAULT_PORT: u16 = 50051;
/// Metadata naming the pod that answered, on failures (in the trailers).
pub const POD_METADATA: &str = "x-echo-pod";
/// Replies a server stream sends at most (a bound on what one request can ask for).
const MAX_STREAM_REPLIES: u32 = 100_000;

/// Arguments of `meshctl app grpc-echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct GrpcEchoArgs {
    /// Port to listen on, on all addresses (gRPC over h2c).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: GrpcEchoArgs) -> Result<(), AppError> {
    let listener = bind(args.port).await?;
    tracing::info!(port = args.port, "grpc-echo listening");
    serve(listener, Identity::from_env(), shutdown_signal()).await
}

/// Serves the Echo service on `listener` as `identity` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    identity: Identity,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let service = EchoServer::new(EchoService {
        identity,
        failures: Arc::default(),
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = pin!(shutdown);
    while let Some((permit, stream, peer)) =
        accept_bounded("grpc-echo", &listener, &slots, &mut shutdown).await
    {
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let hyper_service = service_fn(move |req| {
            let mut service = service.clone();
            async move { Ok::<_, Infallible>(service.call(req).await.unwrap_or_else(|e| match e {})) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), hyper_service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("grpc-echo connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
    Ok(())
}

/// The Echo service of one server.
#[derive(Clone)]
struct EchoService {
    identity: Identity,
    /// Calls seen per `fail_key`.
    failures: Arc<Mutex<HashMap<String, u32>>>,
}

impl EchoService {
    fn reply(&self, message: String, index: u32) -> EchoReply {
        EchoReply {
            message,
            pod: self.identity.pod.clone(),
            version: self.identity.version.clone(),
            index,
        }
    }

    /// A status naming this pod in its metadata.
    fn status(&self, code: Code, message: String) -> Status {
        let mut metadata = MetadataMap::new();
        if let Ok(pod) = MetadataValue::try_from(self.identity.pod.as_str()) {
            metadata.insert(POD_METADATA, pod);
        }
        Status::with_metadata(code, message, metadata)
    }

    /// The failure `request` asks for, if this call is to fail.
    fn fault(&self, request: &EchoRequest) -> Result<(), Status> {
        if request.fail_code == 0 {
            return Ok(());
        }
        if !request.fail_key.is_empty() {
            let mut seen = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let calls = seen.entry(request.fail_key.clone()).or_default();
            *calls += 1;
            if *calls > request.fail_times {
                return Ok(());
            }
        }
        let code = i32::try_from(request.fail_code).map_or(Code::Unknown, Code::from_i32);
        Err(self.status(code, format!("failing with {} as asked", code as i32)))
    }

    /// Waits `request.sleep_ms`, unless the caller's `deadline` comes first: then
    /// DEADLINE_EXCEEDED.
    async fn delay(&self, request: &EchoRequest, deadline: Option<Instant>) -> Result<(), Status> {
        if request.sleep_ms == 0 {
            return Ok(());
        }
        let wake = Instant::now() + Duration::from_millis(request.sleep_ms);
        match deadline.filter(|_| !request.ignore_deadline) {
            Some(deadline) if deadline < wake => {
                tokio::time::sleep_until(deadline).await;
                Err(self.status(
                    Code::DeadlineExceeded,
                    "the caller's deadline passed".to_string(),
                ))
            }
            _ => {
                tokio::time::sleep_until(wake).await;
                Ok(())
            }
        }
    }

    /// Fault, then delay: how every call starts.
    async fn prepare(
        &self,
        request: &EchoRequest,
        deadline: Option<Instant>,
    ) -> Result<(), Status> {
        self.fault(request)?;
        self.delay(request, deadline).await
    }
}

/// When a call's `grpc-timeout` ends, counted from now.
fn deadline(metadata: &MetadataMap) -> Option<Instant> {
    let value = metadata
        .get(api::grpc_timeout::GRPC_TIMEOUT)?
        .to_str()
        .ok()?;
    api::grpc_timeout::parse(value).map(|d| Instant::now() + d)
}

type ReplyStream = ReceiverStream<Result<EchoReply, Status>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let deadline = deadline(request.metadata());
        let request = request.into_inner();
        self.prepare(&request, deadline).await?;
        Ok(Response::new(self.reply(request.message, 0)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let deadline = deadline(request.metadata());
        let request = request.into_inner();
        self.prepare(&request, deadline).await?;
        let (tx, rx) = mpsc::channel(16);
        let count = request.count.clamp(1, MAX_STREAM_REPLIES);
        let this = self.clone();
        tokio::spawn(async move {
            for index in 0..count {
                let reply = this.reply(format!("{}-{index}", request.message), index);
                if tx.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let deadline = deadline(request.metadata());
        let mut stream = request.into_inner();
        let mut messages = Vec::new();
        let mut first = None;
        while let Some(request) = stream.next().await {
            let request = request?;
            messages.push(request.message.clone());
            first.get_or_insert(request);
        }
        if let Some(first) = &first {
            self.prepare(first, deadline).await?;
        }
        Ok(Response::new(self.reply(messages.join(","), 0)))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let deadline = deadline(request.metadata());
        let mut stream = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        tokio::spawn(async move {
            let mut index = 0;
            while let Some(request) = stream.next().await {
                let answer = match request {
                    Ok(request) => this
                        .prepare(&request, deadline)
                        .await
                        .map(|()| this.reply(request.message, index)),
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
                index += 1;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
