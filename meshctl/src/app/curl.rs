//! `meshctl app curl`: one HTTP request, body to stdout — for pods that have
//! no curl of their own.

use std::io::Write as _;

use super::client::{self, Reply, RequestTemplate};
use super::error::AppError;

/// Largest body `curl` prints; bigger replies are an error, not a truncation.
pub const MAX_CURL_BODY: usize = 16 << 20;

/// Arguments of `meshctl app curl`.
#[derive(clap::Args, Debug, Clone)]
pub struct CurlArgs {
    /// URL to request (http:// only; the scheme may be left out).
    pub url: String,
    /// Extra request header "name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request method (default GET, or POST with --data).
    #[arg(short = 'X', long, visible_alias = "request")]
    pub method: Option<String>,
    /// Request body.
    #[arg(short = 'd', long)]
    pub data: Option<String>,
    /// Use HTTP/2 with prior knowledge (h2c).
    #[arg(long)]
    pub http2: bool,
    /// Print the status line and headers before the body.
    #[arg(short = 'i', long)]
    pub include: bool,
    /// Deadline for the whole request, connecting included, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Fail (exit code 22, nothing printed) on a non-2xx status.
    #[arg(short = 'f', long)]
    pub fail: bool,
    /// Accepted for curl compatibility; curl here never prints progress.
    #[arg(short = 's', long)]
    pub silent: bool,
}

/// Runs `curl`: prints the response to stdout.
pub async fn run(args: CurlArgs) -> Result<(), AppError> {
    let reply = request(&args).await?;
    if args.fail && !reply.status.is_success() {
        return Err(AppError::HttpStatus(reply.status.as_u16()));
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&render(&reply, args.include))?;
    stdout.flush()?;
    Ok(())
}

/// Sends the request the arguments describe and returns the whole reply.
pub async fn request(args: &CurlArgs) -> Result<Reply, AppError> {
    let template = RequestTemplate::new(
        &args.url,
        args.method.as_deref(),
        &args.headers,
        args.data.as_deref(),
        args.http2,
    )?;
    client::fetch(&template, args.timeout_ms, MAX_CURL_BODY).await
}

/// The bytes `curl` prints: with `include`, `HTTP/1.1 200 OK`, the headers
/// and a blank line (CRLF, like curl) before the body.
pub fn render(reply: &Reply, include: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.body.len() + 256);
    if include {
        out.extend_from_slice(format!("{:?} {}\r\n", reply.version, reply.status).as_bytes());
        for (name, value) in &reply.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&reply.body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::echo_reply::EchoReply;
    use crate::app::http_echo::{EchoSettings, serve};
    use crate::app::identity::Identity;
    use clap::Parser;
    use std::net::SocketAddr;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CurlArgs,
    }

    fn args(argv: &[&str]) -> CurlArgs {
        Cli::try_parse_from(std::iter::once("curl").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    async fn echo() -> (SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let identity = Identity {
            pod: "curl-echo".into(),
            namespace: "t".into(),
            version: "v1".into(),
        };
        tokio::spawn(serve(listener, EchoSettings::new(identity), async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[tokio::test]
    async fn fetches_from_echo_with_method_headers_and_body() {
        let (addr, _stop) = echo().await;
        let url = format!("{addr}/x?y=1");
        let a = args(&[&url, "-H", "x-test: yes", "-d", "payload", "-i"]);
        let reply = request(&a).await.unwrap();
        assert_eq!(reply.status, 200);
        let echo: EchoReply = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.path, "/x?y=1");
        assert_eq!(echo.headers["x-test"], "yes");
        assert_eq!(echo.headers["host"], addr.to_string());

        let text = String::from_utf8(render(&reply, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("x-echo-pod: curl-echo\r\n"), "{text}");
        assert!(text.ends_with(&String::from_utf8_lossy(&reply.body).into_owned()));
        assert_eq!(render(&reply, false), reply.body.to_vec());
    }

    #[tokio::test]
    async fn h2c_and_fail_flag() {
        let (addr, _stop) = echo().await;
        let reply = request(&args(&[&format!("http://{addr}/"), "--http2"]))
            .await
            .unwrap();
        let echo: EchoReply = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(echo.protocol, "HTTP/2.0");

        let url = format!("http://{addr}/?status=404");
        assert!(
            run(args(&[&url])).await.is_ok(),
            "any response is success without --fail"
        );
        let err = run(args(&[&url, "--fail"])).await.unwrap_err();
        assert!(matches!(err, AppError::HttpStatus(404)));
        assert_eq!(err.exit_code(), 22);
    }

    #[tokio::test]
    async fn connection_refused_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = request(&args(&[&format!("http://{addr}/")]))
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::Connect { .. }), "{err}");
        assert_eq!(err.exit_code(), 7);
    }

    #[tokio::test]
    async fn times_out() {
        // A listener that never answers: the kernel accepts, nobody reads.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let err = request(&args(&[&url, "--timeout-ms", "100"]))
            .await
            .unwrap_err();
        assert!(matches!(err, AppError::Timeout(100)), "{err}");
    }
}
