//! The `controller` binary.

use clap::Parser;

/// Control plane of the ambient mesh.
#[derive(Parser, Debug)]
#[command(
    name = "controller",
    version,
    about,
    long_about = "Control plane of the ambient mesh. Watches Kubernetes (or a folder of the same manifests), translates them into workloads, services, policies and routes, streams them to ztunnels and waypoints over delta xDS (port 15012), and is the certificate authority that issues SPIFFE workload identities."
)]
struct Args {
    /// Log filter in `tracing` syntax (for example `info` or `controller=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .init();
    tracing::error!(
        "controller: this build carries no runtime yet; only --help and --version work"
    );
    std::process::ExitCode::from(2)
}
