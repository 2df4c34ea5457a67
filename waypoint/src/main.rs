//! The `waypoint` binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use waypoint::app::{WaypointConfig, run, service_account_from_token};
use ztunnel::control::ControlArgs;

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
    /// Trust domain.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Cluster id.
    #[arg(long, default_value = "Kubernetes")]
    cluster_id: String,
    /// Service account the waypoint runs as; default: the one its token was issued for,
    /// else the Gateway's name (as Istio names a waypoint's service account).
    #[arg(long)]
    service_account: Option<String>,
    /// HBONE listener.
    #[arg(long, default_value = "0.0.0.0:15008")]
    hbone_addr: SocketAddr,
    /// Admin endpoint (`/config_dump`).
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin_addr: SocketAddr,
    /// Metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:15020")]
    metrics_addr: SocketAddr,
    /// Readiness endpoint.
    #[arg(long, default_value = "0.0.0.0:15021")]
    ready_addr: SocketAddr,
    /// Requested certificate lifetime, in seconds.
    #[arg(long, default_value_t = 86400)]
    cert_ttl_secs: u64,
    /// How long in-flight requests may run after SIGTERM, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
    /// Log filter in `tracing` syntax (for example `info` or `waypoint=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .init();
    let service_account = args
        .service_account
        .clone()
        .or_else(|| {
            let token = args.control.token_file.as_deref()?;
            service_account_from_token(token, &args.namespace)
        })
        .unwrap_or_else(|| args.name.clone());
    let config = WaypointConfig {
        namespace: args.namespace,
        name: args.name,
        service_account,
        trust_domain: args.trust_domain,
        cluster_id: args.cluster_id,
        control: args.control.config(),
        hbone_addr: args.hbone_addr,
        admin_addr: args.admin_addr,
        metrics_addr: args.metrics_addr,
        ready_addr: args.ready_addr,
        cert_ttl: Duration::from_secs(args.cert_ttl_secs),
        drain_deadline: Duration::from_secs(args.drain_secs),
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
