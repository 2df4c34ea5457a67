//! `meshctl app tcp-echo`: sends every byte back, optionally after a banner
//! line naming the pod (so L4 load balancing can be observed).

use std::io;
use std::pin::pin;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::error::AppError;
use super::identity::Identity;
use super::listen::{MAX_CONNECTIONS, accept_bounded, bind};
use controller::shutdown::signal as shutdown_signal;

/// Arguments of `meshctl app tcp-echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct TcpEchoArgs {
    /// Port to listen on, on all addresses.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// First write the pod name and a newline on every connection.
    #[arg(long)]
    pub banner: bool,
}

/// Runs `tcp-echo` until SIGTERM or Ctrl-C.
pub async fn run(args: TcpEchoArgs) -> Result<(), AppError> {
    let pod = Identity::from_env().pod;
    let banner = args.banner.then(|| format!("{pod}\n"));
    let listener = bind(args.port).await?;
    tracing::info!(port = args.port, pod = %pod, "tcp-echo listening");
    serve(listener, banner, shutdown_signal()).await
}

/// Echoes on every connection accepted from `listener` until `shutdown`
/// completes; `banner`, when set, is written first on each connection.
pub async fn serve(
    listener: TcpListener,
    banner: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let banner: Option<Arc<str>> = banner.map(Arc::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut shutdown = pin!(shutdown);
    while let Some((permit, stream, peer)) =
        accept_bounded("tcp-echo", &listener, &slots, &mut shutdown).await
    {
        let banner = banner.clone();
        tokio::spawn(async move {
            match echo_connection(stream, banner.as_deref()).await {
                Ok(bytes) => tracing::debug!("tcp-echo {peer}: echoed {bytes} bytes"),
                Err(e) => tracing::debug!("tcp-echo {peer}: {e}"),
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Writes the banner, copies everything read back to the peer, and when the
/// peer half-closes, finishes the copy and half-closes our side too.
async fn echo_connection(mut stream: TcpStream, banner: Option<&str>) -> io::Result<u64> {
    stream.set_nodelay(true)?;
    if let Some(banner) = banner {
        stream.write_all(banner.as_bytes()).await?;
    }
    let (mut reader, mut writer) = stream.split();
    // tokio's copy uses a fixed-size buffer, so memory per connection is bounded.
    let bytes = tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::sync::oneshot;

    async fn start(banner: Option<&str>) -> (SocketAddr, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let banner = banner.map(str::to_string);
        tokio::spawn(serve(listener, banner, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    #[tokio::test]
    async fn echoes_and_honours_half_close() {
        let (addr, _stop) = start(None).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"hello, ").await.unwrap();
        stream.write_all(b"world").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        stream.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"hello, world");
    }

    #[tokio::test]
    async fn echoes_large_payload_exactly() {
        let (addr, _stop) = start(None).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        // Write concurrently with reading, or both sides' buffers fill up.
        let writing = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let mut echoed = Vec::new();
        reader.read_to_end(&mut echoed).await.unwrap();
        writing.await.unwrap();
        assert_eq!(echoed.len(), payload.len());
        assert!(echoed == payload);
    }

    #[tokio::test]
    async fn banner_names_the_pod_first() {
        let (addr, _stop) = start(Some("echo-7\n")).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert_eq!(line, "echo-7\n");
        stream.get_mut().write_all(b"ping").await.unwrap();
        stream.get_mut().shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"ping");
    }

    #[tokio::test]
    async fn stops_accepting_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, None, async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
