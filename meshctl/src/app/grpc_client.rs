//! `meshctl app grpc`: one call of `meshctl app grpc-echo`'s Echo service, of any of the four
//! kinds, with the request fields that make the server fail or wait; prints what came back
//! (replies, the final status, the trailers) as text or, with `-o json`, as a
//! [`GrpcReport`]. Exits 0 on status OK, else 22 (after printing the report).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use api::echo::echo_client::EchoClient;
use api::echo::{EchoReply, EchoRequest};
use http::Uri;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::StreamExt as _;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Status, Streaming};

use super::client::Target;
use super::error::AppError;

/// How long a call may take beyond its `--timeout-ms` before the client gives up on it.
const GRACE: Duration = Duration::from_secs(10);
/// How long a call without `--timeout-ms` may take.
const DEFAULT_BOUND: Duration = Duration::from_secs(30);

/// Which of the Echo service's calls to make.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// One request, one reply.
    Unary,
    /// One request, `--count` replies.
    ServerStream,
    /// `--count` requests, one reply.
    ClientStream,
    /// `--count` requests, each answered before the next is sent.
    Bidi,
}

/// Output format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One line per reply, then the status.
    Text,
    /// A [`GrpcReport`].
    Json,
}

/// Arguments of `meshctl app grpc`.
#[derive(clap::Args, Debug, Clone)]
pub struct GrpcArgs {
    /// The server, as `http://host:port` (h2c).
    #[arg(long)]
    pub url: String,
    /// Which call to make.
    #[arg(long, value_enum, default_value_t = CallKind::Unary)]
    pub method: CallKind,
    /// Replies of a server stream, requests of a client stream or bidi call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// The message to echo (streams number it: `hello-0`, `hello-1`, ...).
    #[arg(long, default_value = "hello")]
    pub message: String,
    /// Ask the server to answer this gRPC status code instead (e.g. 14 for UNAVAILABLE).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub fail_with: Option<u32>,
    /// With --fail-with: fail only the first --fail-times calls with this key.
    #[arg(long, requires = "fail_with")]
    pub fail_key: Option<String>,
    /// With --fail-key: how many calls of the key fail.
    #[arg(long, default_value_t = 1, requires = "fail_key")]
    pub fail_times: u32,
    /// Ask the server to wait this long before answering.
    #[arg(long, default_value_t = 0)]
    pub sleep_ms: u64,
    /// The call's deadline, sent as `grpc-timeout`.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=99_999_999))]
    pub timeout_ms: Option<u64>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// One reply as the client received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplySummary {
    /// The echoed message.
    pub message: String,
    /// The pod that answered.
    pub pod: String,
    /// Its version.
    pub version: String,
    /// Its position in its stream.
    pub index: u32,
}

impl From<EchoReply> for ReplySummary {
    fn from(r: EchoReply) -> Self {
        ReplySummary {
            message: r.message,
            pod: r.pod,
            version: r.version,
            index: r.index,
        }
    }
}

/// What one call got back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpcReport {
    /// The call made.
    pub method: CallKind,
    /// The final gRPC status code (0 = OK).
    pub code: i32,
    /// The status's message (empty on OK).
    pub status_message: String,
    /// Requests sent.
    pub sent: u32,
    /// Replies received, in order.
    pub replies: Vec<ReplySummary>,
    /// The trailers of a stream, or of a failed call (gRPC's own `grpc-*` left out).
    pub trailers: BTreeMap<String, String>,
}

/// Makes the call and prints its report; an error when it did not end with OK.
pub async fn run(args: GrpcArgs) -> Result<(), AppError> {
    let bound = args.timeout_ms.map_or(DEFAULT_BOUND, |ms| {
        Duration::from_millis(ms).saturating_add(GRACE)
    });
    let report = tokio::time::timeout(bound, call(&args))
        .await
        .map_err(|_| AppError::Timeout(bound.as_millis() as u64))??;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string(&report)?)?,
        Output::Text => {
            for r in &report.replies {
                writeln!(out, "{} (from {})", r.message, r.pod)?;
            }
            writeln!(
                out,
                "status {} {}",
                report.code,
                Code::from_i32(report.code).description()
            )?;
        }
    }
    if report.code != 0 {
        return Err(AppError::GrpcStatus {
            code: report.code,
            message: report.status_message,
        });
    }
    Ok(())
}

/// Connects and makes the call `args` describe.
pub async fn call(args: &GrpcArgs) -> Result<GrpcReport, AppError> {
    let target = Target::parse(&args.url)?;
    let origin: Uri =
        format!("http://{}", target.authority())
            .parse()
            .map_err(|e: http::uri::InvalidUri| AppError::InvalidUrl {
                url: args.url.clone(),
                reason: e.to_string(),
            })?;
    let io = TokioIo::new(target.connect().await?);
    let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("grpc connection: {e}");
        }
    });
    let mut client = EchoClient::with_origin(H2c(sender), origin);
    let mut report = GrpcReport {
        method: args.method,
        code: 0,
        status_message: String::new(),
        sent: 0,
        replies: Vec::new(),
        trailers: BTreeMap::new(),
    };
    let outcome = match args.method {
        CallKind::Unary => unary(&mut client, args, &mut report).await,
        CallKind::ServerStream => server_stream(&mut client, args, &mut report).await,
        CallKind::ClientStream => client_stream(&mut client, args, &mut report).await,
        CallKind::Bidi => bidi(&mut client, args, &mut report).await,
    };
    if let Err(status) = outcome {
        report.code = status.code() as i32;
        report.status_message = status.message().to_string();
        report.trailers = metadata_map(status.metadata());
    }
    Ok(report)
}

/// The request `args` describe, with `message`.
fn echo_request(args: &GrpcArgs, message: String) -> EchoRequest {
    EchoRequest {
        message,
        count: args.count,
        fail_code: args.fail_with.unwrap_or_default(),
        fail_key: args.fail_key.clone().unwrap_or_default(),
        fail_times: args.fail_times,
        sleep_ms: args.sleep_ms,
    }
}

/// `message` as the request of a call, with its deadline as `grpc-timeout` metadata. Set as
/// metadata rather than with tonic's `set_timeout`, which also enforces it in the client (with
/// CANCELLED): the deadline is left to the mesh and the server, so the status shows which of
/// them kept it; the client itself gives up only [`GRACE`] later.
fn with_deadline<T>(args: &GrpcArgs, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(ms) = args.timeout_ms {
        // Milliseconds, at most 8 digits (the parser bounds --timeout-ms): always valid.
        if let Ok(value) = MetadataValue::try_from(format!("{ms}m")) {
            request
                .metadata_mut()
                .insert(api::grpc_timeout::GRPC_TIMEOUT, value);
        }
    }
    request
}

/// The `n`th message of a stream.
fn numbered(args: &GrpcArgs, n: u32) -> String {
    format!("{}-{n}", args.message)
}

async fn unary(
    client: &mut EchoClient<H2c>,
    args: &GrpcArgs,
    report: &mut GrpcReport,
) -> Result<(), Status> {
    let request = with_deadline(args, echo_request(args, args.message.clone()));
    report.sent = 1;
    let reply = client.unary(request).await?.into_inner();
    report.replies.push(reply.into());
    Ok(())
}

async fn server_stream(
    client: &mut EchoClient<H2c>,
    args: &GrpcArgs,
    report: &mut GrpcReport,
) -> Result<(), Status> {
    let request = with_deadline(args, echo_request(args, args.message.clone()));
    report.sent = 1;
    let stream = client.server_stream(request).await?.into_inner();
    drain(stream, report).await
}

async fn client_stream(
    client: &mut EchoClient<H2c>,
    args: &GrpcArgs,
    report: &mut GrpcReport,
) -> Result<(), Status> {
    let requests: Vec<EchoRequest> = (0..args.count)
        .map(|n| echo_request(args, numbered(args, n)))
        .collect();
    report.sent = args.count;
    let stream = tonic::codegen::tokio_stream::iter(requests);
    let reply = client
        .client_stream(with_deadline(args, stream))
        .await?
        .into_inner();
    report.replies.push(reply.into());
    Ok(())
}

/// Sends each request only once the previous one was answered: the call must stream both
/// ways at once to complete.
async fn bidi(
    client: &mut EchoClient<H2c>,
    args: &GrpcArgs,
    report: &mut GrpcReport,
) -> Result<(), Status> {
    let (tx, rx) = mpsc::channel(1);
    let send = |n| tx.send(echo_request(args, numbered(args, n)));
    send(0)
        .await
        .map_err(|_| Status::internal("request stream closed"))?;
    report.sent = 1;
    let mut replies = client
        .bidi(with_deadline(args, ReceiverStream::new(rx)))
        .await?
        .into_inner();
    while let Some(reply) = replies.message().await? {
        report.replies.push(reply.into());
        if report.sent == args.count {
            break;
        }
        send(report.sent)
            .await
            .map_err(|_| Status::internal("request stream closed"))?;
        report.sent += 1;
    }
    drop(tx);
    drain(replies, report).await
}

/// Reads the rest of a reply stream and its trailers.
async fn drain(mut stream: Streaming<EchoReply>, report: &mut GrpcReport) -> Result<(), Status> {
    while let Some(reply) = stream.next().await {
        report.replies.push(reply?.into());
    }
    if let Some(trailers) = stream.trailers().await? {
        report.trailers = metadata_map(&trailers);
    }
    Ok(())
}

/// An h2c connection as the service tonic's generated client calls. Not tonic's own
/// `Channel`, which enforces `grpc-timeout` in the client (see [`with_deadline`]).
#[derive(Clone)]
struct H2c(http2::SendRequest<tonic::body::Body>);

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for H2c {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// Metadata as text, without gRPC's own `grpc-*` entries.
fn metadata_map(metadata: &MetadataMap) -> BTreeMap<String, String> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .filter(|(name, _)| !name.as_str().starts_with("grpc-"))
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}
