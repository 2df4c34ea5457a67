//! The `ztunnel` binary: `ztunnel proxy` (the node proxy) and `ztunnel node-agent` (capture).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use proxy_core::control::ControlArgs;
use proxy_core::settings::MeshProxyArgs;
use ztunnel::settings::{AgentSettings, ProxySettings};

/// Per-node L4 tunnel of the ambient mesh.
#[derive(Parser, Debug)]
#[command(
    name = "ztunnel",
    version,
    about,
    long_about = "Per-node L4 tunnel of the ambient mesh. `ztunnel proxy` runs once per node, \
        runs listeners inside each enrolled pod's network namespace and carries every TCP \
        connection over HBONE (HTTP/2 CONNECT inside mTLS, port 15008) to the destination's \
        ztunnel or waypoint, enforcing L4 authorization and reporting TCP telemetry. \
        `ztunnel node-agent` installs the in-pod redirection rules and hands pod network \
        namespaces to the proxy over ZDS."
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Log filter in `tracing` syntax (for example `info` or `ztunnel=debug`).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// The node proxy.
    Proxy(ProxyArgs),
    /// The node agent (in-pod capture).
    NodeAgent(AgentArgs),
    /// Whether this host can capture pods: installs the in-pod redirection (policy routing
    /// and iptables, IPv4 and IPv6) in a throwaway network namespace and reports each family.
    /// Exit status 1 when one cannot be installed.
    Preflight,
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// This node's name.
    #[arg(long)]
    node: String,
    #[command(flatten)]
    control: ControlArgs,
    /// ZDS socket served by the node agent.
    #[arg(long, default_value = "/var/run/ztunnel/ztunnel.sock")]
    zds_socket: PathBuf,
    #[command(flatten)]
    mesh: MeshProxyArgs,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// This node's name.
    #[arg(long)]
    node: String,
    #[command(flatten)]
    control: ControlArgs,
    /// ZDS socket to serve.
    #[arg(long, default_value = "/var/run/ztunnel/ztunnel.sock")]
    zds_socket: PathBuf,
    /// Folder where `<namespace>.<pod>` names each pod's network namespace file; without
    /// it, the namespace holding the pod's IP is found through /proc.
    #[arg(long, value_name = "DIR")]
    netns_dir: Option<PathBuf>,
    /// The node's network namespace, where the rule SNATing the node's health probes of
    /// captured pods to 169.254.7.127 is installed (pid 1's with hostPID; the sandbox's node
    /// runs the agent in it, `/proc/self/ns/net`).
    #[arg(long, value_name = "PATH", default_value = "/proc/1/ns/net")]
    host_netns: PathBuf,
    /// Keep the node's probe rule (`false`: kubelet's HTTP probes of captured pods then reach
    /// the proxy, which STRICT peer authentication refuses).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    host_probe_rule: bool,
    /// Serve the agent's own `/metrics` (the probe rule's failures and coverage) here.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// The DaemonSet this agent runs in (NAMESPACE/NAME). When the agent stops and it is gone
    /// or being deleted, the mesh is being uninstalled: every captured pod gets its own
    /// network back and the node's probe rule goes. Otherwise (and without this flag) a stop
    /// leaves pods captured, for the next agent.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    daemonset: Option<String>,
    /// The Kubernetes API server to read the DaemonSet from, `http://HOST:PORT`; by default
    /// the cluster's own, with the pod's ServiceAccount.
    #[arg(long, value_name = "URL", requires = "daemonset")]
    kube_api: Option<String>,
    /// Socket the chained CNI plugin (`ztunnel-cni`) asks on, to capture each new pod
    /// before its containers start.
    #[arg(long, value_name = "PATH")]
    cni_socket: Option<PathBuf>,
    /// Put the plugin into the node's CNI configuration: its binary into this folder (the
    /// host's CNI bin dir), its entry into the primary config of `--cni-conf-dir`. Needs
    /// `--cni-socket` (the same path on the host).
    #[arg(long, value_name = "DIR", requires_all = ["cni_conf_dir", "cni_socket"])]
    cni_bin_dir: Option<PathBuf>,
    /// The host's CNI conf folder (see `--cni-bin-dir`).
    #[arg(long, value_name = "DIR", requires = "cni_bin_dir")]
    cni_conf_dir: Option<PathBuf>,
    /// The plugin binary to copy (default: `ztunnel-cni` beside this binary).
    #[arg(long, value_name = "PATH")]
    cni_plugin: Option<PathBuf>,
    /// Namespaces the plugin never asks about (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "kube-system")]
    cni_exclude_namespaces: Vec<String>,
}

/// The uninstall check `--daemonset` and `--kube-api` ask for.
fn uninstall_check(
    args: &AgentArgs,
) -> Result<Option<ztunnel::agent::uninstall::UninstallCheck>, String> {
    use ztunnel::agent::kube_api::KubeApi;
    let Some(reference) = &args.daemonset else {
        return Ok(None);
    };
    let api = match &args.kube_api {
        Some(url) => KubeApi::plain(url),
        None => KubeApi::in_cluster(),
    }
    .map_err(|e| e.to_string())?;
    ztunnel::agent::uninstall::UninstallCheck::parse(api, reference)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The CNI install settings, when `--cni-bin-dir` asks for one.
fn cni_install(args: &AgentArgs) -> Option<ztunnel::settings::CniInstallSettings> {
    let bin_dir = args.cni_bin_dir.clone()?;
    let conf_dir = args.cni_conf_dir.clone()?;
    let plugin = args.cni_plugin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("ztunnel-cni")))
            .unwrap_or_else(|| PathBuf::from("/usr/local/bin/ztunnel-cni"))
    });
    Some(ztunnel::settings::CniInstallSettings {
        plugin,
        bin_dir,
        conf_dir,
        exclude_namespaces: args.cni_exclude_namespaces.clone(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log_level))
        // Colour only on a terminal: log files and `kubectl logs` get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    let result = match cli.role {
        Role::Preflight => runtime.block_on(preflight()).map(|passed| failed = !passed),
        Role::Proxy(args) => {
            let config = ProxySettings {
                node: args.node,
                control: args.control.config(),
                zds_socket: args.zds_socket,
                mesh: args.mesh.config(),
            };
            runtime
                .block_on(ztunnel::app::run_proxy(config))
                .map_err(|e| e.to_string())
        }
        Role::NodeAgent(args) => {
            let uninstall = match uninstall_check(&args) {
                Ok(check) => check,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let cni_install = cni_install(&args);
            let config = AgentSettings {
                node: args.node,
                control: args.control.config(),
                zds_socket: args.zds_socket,
                netns_dir: args.netns_dir,
                host_netns: args.host_probe_rule.then_some(args.host_netns),
                metrics_addr: args.metrics_addr,
                uninstall,
                cni_socket: args.cni_socket,
                cni_install,
            };
            runtime.block_on(async {
                let mut signals = proxy_core::shutdown::ShutdownSignals::install()
                    .map_err(|e| format!("installing signal handlers: {e}"))?;
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    signals.recv().await;
                    let _ = tx.send(true);
                });
                ztunnel::agent::run(config, rx)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
    };
    match result {
        Ok(()) if !failed => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one line per IP family (`ipv4: ok`, or why not) and whether all passed.
async fn preflight() -> Result<bool, String> {
    let outcome = ztunnel::agent::preflight::run()
        .await
        .map_err(|e| format!("no network namespace could be made: {e}"))?;
    for (family, result) in &outcome.families {
        let name = match family {
            ztunnel::agent::iptables::Family::V4 => "ipv4",
            ztunnel::agent::iptables::Family::V6 => "ipv6",
        };
        match result {
            Ok(()) => println!("{name}: ok"),
            // One line per family: iptables-restore explains itself over several.
            Err(e) => println!("{name}: {}", e.lines().collect::<Vec<_>>().join("; ")),
        }
    }
    Ok(outcome.passed())
}
