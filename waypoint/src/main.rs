//! The `waypoint` binary.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use proxy_core::control::ControlArgs;
use proxy_core::settings::MeshProxyArgs;
use waypoint::app::{WaypointSettings, run, service_account_from_token};

/// Per-namespace L7 proxy of the ambient mesh.
#[derive(Parser, Debug)]
#[command(
    name = "waypoint",
    version,
    about,
    long_about = "Per-namespace L7 proxy of the ambient mesh. Terminates HBONE, parses HTTP/1.1, HTTP/2 and gRPC, applies routing, mirroring, fault injection, retries, timeouts, circuit breaking, rate limiting and L7 authorization, then originates HBONE to the chosen endpoint.",
    // The waypoint's identity is its token's: it cannot run without one.
    mut_arg("token_file", |arg| arg.required(true))
)]
struct Args {
    /// Namespace of the waypoint's Gateway.
    #[arg(long)]
    namespace: String,
    /// Name of the waypoint's Gateway.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    control: ControlArgs,
    #[command(flatten)]
    mesh: MeshProxyArgs,
    /// Service account the waypoint runs as; default: the one its token was issued for,
    /// else the Gateway's name (as Istio names a waypoint's service account).
    #[arg(long)]
    service_account: Option<String>,
    /// HBONE listener.
    #[arg(long, default_value = "0.0.0.0:15008")]
    hbone_addr: SocketAddr,
    /// Log filter in `tracing` syntax (for example `info` or `waypoint=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        // Colour only on a terminal: log files and `kubectl logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let service_account = args
        .service_account
        .clone()
        .or_else(|| {
            let token = args.control.token_file.as_deref()?;
            service_account_from_token(token, &args.namespace)
        })
        .unwrap_or_else(|| args.name.clone());
    let config = WaypointSettings {
        namespace: args.namespace,
        name: args.name,
        service_account,
        control: args.control.config(),
        hbone_addr: args.hbone_addr,
        mesh: args.mesh.config(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
