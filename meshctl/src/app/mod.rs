//! Built-in test apps, run as container commands inside sandbox pods
//! (`meshctl app http-echo --port 8080`): an HTTP echo server, a TCP echo
//! server, an HTTP load generator and a minimal curl.

pub mod client;
pub mod curl;
pub mod echo_reply;
mod error;
pub mod http_echo;
pub mod identity;
pub mod load;
pub mod load_report;
pub mod tcp_echo;

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpListener;

pub use error::AppError;

/// Most connections a test server serves at once; further clients wait in
/// the listen backlog.
pub const MAX_CONNECTIONS: usize = 4096;

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
}

/// Runs one app to completion (servers: until SIGTERM or Ctrl-C).
pub async fn run(cmd: AppCommand) -> Result<(), AppError> {
    match cmd {
        AppCommand::HttpEcho(args) => http_echo::run(args).await,
        AppCommand::TcpEcho(args) => tcp_echo::run(args).await,
        AppCommand::Load(args) => load::run(args).await,
        AppCommand::Curl(args) => curl::run(args).await,
    }
}

/// Listens on `port` on all IPv4 addresses (pods in the sandbox are IPv4).
async fn bind(port: u16) -> Result<TcpListener, AppError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// Pause after a failed accept (typically EMFILE), so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Accepts connections while holding at most [`MAX_CONNECTIONS`] at once: each connection comes
/// with the permit that frees its slot when dropped. Returns `None` once `shutdown` completes.
async fn accept_bounded<F: std::future::Future<Output = ()>>(
    app: &str,
    listener: &TcpListener,
    slots: &std::sync::Arc<tokio::sync::Semaphore>,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
)> {
    let permit = tokio::select! {
        permit = slots.clone().acquire_owned() => permit.ok()?,
        () = shutdown.as_mut() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some((permit, stream, peer)),
                Err(e) => {
                    tracing::warn!("{app} accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}

/// Completes on SIGTERM (how the sandbox and Kubernetes stop pods) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM ({e}); stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
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
    fn bad_values_are_rejected_by_the_parser() {
        assert!(parse(&["http-echo", "--fail-rate", "2"]).is_err());
        assert!(parse(&["http-echo", "--status", "42"]).is_err());
        assert!(parse(&["load"]).is_err(), "--url is required");
        assert!(parse(&["curl"]).is_err(), "URL is required");
    }
}
