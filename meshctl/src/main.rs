//! `meshctl`: the operator CLI and the sandbox.

use std::process::ExitCode;

use clap::Parser;
use meshctl::app::AppCommand;
use meshctl::cluster::KubeArgs;
use meshctl::sandbox::cli::{GlobalArgs, SandboxCommand};

/// Operator CLI of the mesh, and a sandbox cluster of network namespaces.
#[derive(Parser, Debug)]
#[command(name = "meshctl", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Sandbox(SandboxCommand),
    /// Built-in test apps to run as container commands.
    #[command(subcommand)]
    App(AppCommand),
    /// Print the Kubernetes install manifests, for `kubectl apply -f -`.
    ///
    /// The CRDs, the controller and the ztunnel DaemonSet (the same objects as the kustomize
    /// base manifests/), with --set options applied. Exit status 2 on a refused option.
    Install(meshctl::install::InstallArgs),
    /// Print the installed objects for `kubectl delete -f -` (CRDs only with --crds).
    ///
    /// The ztunnel DaemonSet comes first: each node agent, stopping, finds it deleted and
    /// gives every pod it captured its own network back (no pod restarts).
    Uninstall(meshctl::install::UninstallArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::App(cmd) => run_app(cmd),
        Command::Install(args) => exit(Ok::<_, String>(meshctl::install::cli::install(&args))),
        Command::Uninstall(args) => exit(Ok::<_, String>(meshctl::install::cli::uninstall(&args))),
        Command::Sandbox(cmd) if cli.kube.enabled() && !meshctl::cluster::verbs::internal(&cmd) => {
            exit(meshctl::cluster::run(&cli.kube, cmd))
        }
        Command::Sandbox(cmd) => exit(meshctl::sandbox::cli::run(&cli.global, cmd)),
    }
}

/// The exit code of a verb's outcome; an error is printed.
fn exit<E: std::fmt::Display>(outcome: Result<i32, E>) -> ExitCode {
    match outcome {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_app(cmd: AppCommand) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(meshctl::app::run(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
