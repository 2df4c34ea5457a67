//! The `ztunnel` binary.

use clap::Parser;

/// Per-node L4 tunnel of the ambient mesh.
#[derive(Parser, Debug)]
#[command(
    name = "ztunnel",
    version,
    about,
    long_about = "Per-node L4 tunnel of the ambient mesh. Runs once per node, captures every TCP connection of the node's enrolled pods inside each pod's network namespace, and carries it over HBONE (HTTP/2 CONNECT inside mTLS, port 15008) to the destination's ztunnel or waypoint. Enforces L4 authorization and reports TCP telemetry."
)]
struct Args {
    /// Log filter in `tracing` syntax (for example `info` or `ztunnel=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .init();
    tracing::error!("ztunnel: this build carries no runtime yet; only --help and --version work");
    std::process::ExitCode::from(2)
}
