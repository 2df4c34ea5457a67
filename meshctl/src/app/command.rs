//! `meshctl app <COMMAND>`: which app to run.

use super::error::AppError;
use super::{curl, grpc_client, grpc_echo, http_echo, load, otlp_receiver, tcp_echo, ws_client};

/// The test apps, as `meshctl app <COMMAND>`.
#[derive(clap::Subcommand, Debug)]
pub enum AppCommand {
    /// HTTP/1.1 and h2c echo server: replies with pod, request and client as JSON.
    HttpEcho(http_echo::HttpEchoArgs),
    /// TCP echo server: sends every byte back.
    TcpEcho(tcp_echo::TcpEchoArgs),
    /// HTTP load generator: status counts, latency percentiles, replies per pod.
    Load(load::LoadArgs),
    /// One HTTP request, body to stdout (for pods without curl).
    Curl(curl::CurlArgs),
    /// WebSocket client: N messages echoed both ways, then a close; a JSON report.
    Ws(ws_client::WsArgs),
    /// gRPC echo server (h2c): the Echo service's four call kinds, failing or waiting on request.
    GrpcEcho(grpc_echo::GrpcEchoArgs),
    /// One gRPC call to grpc-echo (unary or streaming): replies, status and trailers.
    Grpc(grpc_client::GrpcArgs),
    /// OpenTelemetry collector stand-in: OTLP/gRPC and OTLP/HTTP trace export, spans listed
    /// at GET /spans.
    OtlpReceiver(otlp_receiver::OtlpReceiverArgs),
}

/// Runs one app to completion (servers: until SIGTERM or Ctrl-C).
pub async fn run(cmd: AppCommand) -> Result<(), AppError> {
    match cmd {
        AppCommand::HttpEcho(args) => http_echo::run(args).await,
        AppCommand::TcpEcho(args) => tcp_echo::run(args).await,
        AppCommand::Load(args) => load::run(args).await,
        AppCommand::Curl(args) => curl::run(args).await,
        AppCommand::Ws(args) => ws_client::run(args).await,
        AppCommand::GrpcEcho(args) => grpc_echo::run(args).await,
        AppCommand::Grpc(args) => grpc_client::run(args).await,
        AppCommand::OtlpReceiver(args) => otlp_receiver::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        app: AppCommand,
    }

    fn parse(argv: &[&str]) -> Result<AppCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("app").chain(argv.iter().copied())).map(|c| c.app)
    }

    #[test]
    fn container_commands_parse() {
        let cmd = parse(&[
            "http-echo",
            "--port",
            "8081",
            "--fail-rate",
            "0.5",
            "--latency-ms",
            "3",
        ]);
        let Ok(AppCommand::HttpEcho(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!((a.port, a.fail_rate, a.latency_ms), (8081, 0.5, 3));
        let cmd = parse(&[
            "http-echo",
            "--status",
            "503",
            "--upstream",
            "http://orders:8080/",
        ]);
        let Ok(AppCommand::HttpEcho(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(a.status.map(|s| s.as_u16()), Some(503));
        assert_eq!(a.port, 8080);

        let Ok(AppCommand::TcpEcho(a)) = parse(&["tcp-echo", "--banner"]) else {
            panic!()
        };
        assert!(a.banner && a.port == 9000);

        let cmd = parse(&[
            "load",
            "--url",
            "http://svc/",
            "-n",
            "5",
            "-c",
            "2",
            "--json",
            "--http2",
        ]);
        let Ok(AppCommand::Load(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert!(a.json && a.http2 && a.requests == 5 && a.concurrency == 2);

        let cmd = parse(&[
            "curl",
            "-s",
            "-i",
            "-H",
            "a: b",
            "-H",
            "c: d",
            "http://svc:8080/",
        ]);
        let Ok(AppCommand::Curl(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(a.url, "http://svc:8080/");
        assert_eq!(a.headers.len(), 2);
        assert!(a.include && a.timeout_ms == 5000 && !a.fail);
    }

    #[test]
    fn the_websocket_client_parses() {
        let cmd = parse(&[
            "ws",
            "ws://orders:8080/chat",
            "-n",
            "1000",
            "-H",
            "x-chat-version: v2",
            "--http2",
            "--expect-server-close",
        ]);
        let Ok(AppCommand::Ws(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            (a.url.as_str(), a.messages, a.size),
            ("ws://orders:8080/chat", 1000, 64)
        );
        assert!(a.http2 && a.expect_server_close && a.headers.len() == 1);
        assert!(parse(&["ws"]).is_err(), "URL is required");
    }

    #[test]
    fn the_grpc_apps_parse() {
        let Ok(AppCommand::GrpcEcho(a)) = parse(&["grpc-echo"]) else {
            panic!()
        };
        assert_eq!(a.port, grpc_echo::DEFAULT_PORT);
        let cmd = parse(&[
            "grpc",
            "--url",
            "http://greeter:50051",
            "--method",
            "server-stream",
        ]);
        let Ok(AppCommand::Grpc(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(a.method, grpc_client::CallKind::ServerStream);
        assert!(parse(&["grpc"]).is_err(), "--url is required");
    }

    #[test]
    fn the_otlp_receiver_parses() {
        let Ok(AppCommand::OtlpReceiver(a)) = parse(&["otlp-receiver"]) else {
            panic!()
        };
        assert_eq!((a.port, a.max_spans, a.delay_ms), (4317, 100_000, 0));
        assert!(!a.quiet);
        let cmd = parse(&[
            "otlp-receiver",
            "--port",
            "4318",
            "--max-spans",
            "10",
            "--delay-ms",
            "250",
            "--fail-rate",
            "0.25",
            "--quiet",
        ]);
        let Ok(AppCommand::OtlpReceiver(a)) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(
            (a.port, a.max_spans, a.delay_ms, a.fail_rate),
            (4318, 10, 250, 0.25)
        );
        assert!(a.quiet);
        assert!(parse(&["otlp-receiver", "--fail-rate", "1.5"]).is_err());
    }

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        assert!(parse(&["http-echo", "--fail-rate", "2"]).is_err());
        assert!(parse(&["http-echo", "--status", "42"]).is_err());
        assert!(parse(&["load"]).is_err(), "--url is required");
        assert!(parse(&["curl"]).is_err(), "URL is required");
    }
}
