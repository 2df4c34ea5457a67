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
    /// Ask the server to sleep through the deadline (only the mesh can then keep it).
    #[arg(long, requires = "timeout_ms")]
    pub server_ignores_deadline: bool,
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
        ignore_deadline: args.server_ignores_deadline,
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::net::TcpListener;

    use super::*;
    use crate::app::grpc_echo;
    use crate::app::identity::Identity;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GrpcArgs,
    }

    fn args(argv: &[&str]) -> GrpcArgs {
        Cli::try_parse_from(std::iter::once("grpc").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
            .args
    }

    /// A grpc-echo server on a free local port, stopped when the test's runtime ends.
    async fn server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let identity = Identity {
            pod: "greeter-v1-abc".into(),
            namespace: "shop".into(),
            version: "v1".into(),
        };
        tokio::spawn(grpc_echo::serve(listener, identity, std::future::pending()));
        url
    }

    async fn run_call(url: &str, extra: &[&str]) -> GrpcReport {
        let mut argv = vec!["--url", url];
        argv.extend_from_slice(extra);
        call(&args(&argv)).await.expect("the call is made")
    }

    #[test]
    fn flags_parse_and_are_bounded() {
        let a = args(&["--url", "http://g:50051"]);
        assert_eq!(
            (a.method, a.count, a.output),
            (CallKind::Unary, 1, Output::Text)
        );
        let a = args(&[
            "--url",
            "http://g:50051",
            "--method",
            "bidi",
            "--count",
            "7",
            "--fail-with",
            "14",
            "--fail-key",
            "k",
            "--fail-times",
            "2",
            "--timeout-ms",
            "300",
            "-o",
            "json",
        ]);
        assert_eq!(
            (a.method, a.count, a.fail_with),
            (CallKind::Bidi, 7, Some(14))
        );
        assert_eq!((a.fail_key.as_deref(), a.fail_times), (Some("k"), 2));
        assert_eq!((a.timeout_ms, a.output), (Some(300), Output::Json));
        let bad = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("grpc").chain(argv.iter().copied())).is_err()
        };
        assert!(
            bad(&["--url", "u", "--fail-with", "0"]),
            "0 is OK, not a failure"
        );
        assert!(bad(&["--url", "u", "--fail-with", "17"]));
        assert!(
            bad(&["--url", "u", "--fail-key", "k"]),
            "a key needs a code"
        );
        assert!(
            bad(&["--url", "u", "--timeout-ms", "100000000"]),
            "9 digits"
        );
        assert!(
            bad(&["--url", "u", "--server-ignores-deadline"]),
            "needs a deadline"
        );
        assert!(bad(&["--url", "u", "--method", "stream"]));
    }

    #[tokio::test]
    async fn the_four_call_kinds_echo_their_messages() {
        let url = server().await;
        let unary = run_call(&url, &["--message", "ping"]).await;
        assert_eq!((unary.code, unary.sent), (0, 1));
        assert_eq!(unary.replies[0].message, "ping");
        assert_eq!(
            (
                unary.replies[0].pod.as_str(),
                unary.replies[0].version.as_str()
            ),
            ("greeter-v1-abc", "v1")
        );
        let server_stream = run_call(&url, &["--method", "server-stream", "--count", "3"]).await;
        let messages: Vec<_> = server_stream
            .replies
            .iter()
            .map(|r| r.message.as_str())
            .collect();
        assert_eq!(messages, ["hello-0", "hello-1", "hello-2"]);
        let client_stream = run_call(&url, &["--method", "client-stream", "--count", "3"]).await;
        assert_eq!(client_stream.sent, 3);
        assert_eq!(client_stream.replies[0].message, "hello-0,hello-1,hello-2");
        let bidi = run_call(&url, &["--method", "bidi", "--count", "4"]).await;
        let indices: Vec<_> = bidi.replies.iter().map(|r| r.index).collect();
        assert_eq!((bidi.code, bidi.sent, indices), (0, 4, vec![0, 1, 2, 3]));
    }

    #[tokio::test]
    async fn failures_are_counted_per_key_and_name_the_pod() {
        let url = server().await;
        let once = ["--fail-with", "14", "--fail-key", "k", "--fail-times", "1"];
        let first = run_call(&url, &once).await;
        assert_eq!(first.code, 14);
        assert_eq!(first.status_message, "failing with 14 as asked");
        assert_eq!(first.trailers["x-echo-pod"], "greeter-v1-abc");
        assert_eq!(
            run_call(&url, &once).await.code,
            0,
            "only the first call fails"
        );
        let always = run_call(&url, &["--method", "server-stream", "--fail-with", "5"]).await;
        assert_eq!((always.code, always.replies.len()), (5, 0));
    }

    #[tokio::test]
    async fn a_deadline_shorter_than_the_sleep_ends_with_deadline_exceeded() {
        let url = server().await;
        let late = run_call(&url, &["--sleep-ms", "60000", "--timeout-ms", "50"]).await;
        assert_eq!(late.code, Code::DeadlineExceeded as i32);
        assert_eq!(late.status_message, "the caller's deadline passed");
        let in_time = run_call(&url, &["--sleep-ms", "1", "--timeout-ms", "60000"]).await;
        assert_eq!(in_time.code, 0);
    }
}
