//! The sandbox verbs and their options, as clap parses them.

use std::path::PathBuf;

use crate::sandbox::error::Result;
use crate::sandbox::host::forward::Forward;
use crate::sandbox::settings::{DEFAULT_SANDBOX, SandboxSettings};

/// Options every verb takes.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Sandbox to act on; several can run side by side.
    #[arg(long, global = true, env = "MESHCTL_SANDBOX", default_value = DEFAULT_SANDBOX)]
    pub sandbox: String,
    /// State folder of the sandbox [default: /run/meshctl/<sandbox>].
    #[arg(long, global = true, env = "MESHCTL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Folder with the meshctl/ztunnel/controller/waypoint binaries pods run
    /// [default: the folder of this meshctl].
    #[arg(long, global = true, env = "MESHCTL_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl GlobalArgs {
    /// The sandbox these options select.
    pub fn settings(&self) -> Result<SandboxSettings> {
        SandboxSettings::new(&self.sandbox, self.state_dir.clone(), self.bin_dir.clone())
    }
}

/// Sandbox verbs.
#[derive(clap::Subcommand, Debug)]
pub enum SandboxCommand {
    /// Build a sandbox cluster from a folder (or file) of Kubernetes manifests.
    Up(UpArgs),
    /// List pods, services, namespaces or nodes, or show the controller.
    Get(GetArgs),
    /// Create or update objects from a file or folder (`-` for stdin).
    Apply(FileArgs),
    /// Delete the objects named in a file or folder.
    Delete(FileArgs),
    /// Check that the mesh works, each failure with a hint.
    ///
    /// The controller and its CA root, every node's ztunnel, every waypoint and the applied
    /// configuration. Exit status 0 when all is well, 1 on any error, 2 on warnings only.
    Check(CheckArgs),
    /// Golden metrics per deployment, service or namespace over a window.
    ///
    /// Meshed pods, success rate, requests per second, latency percentiles (where a waypoint
    /// serves HTTP), TCP connections, bytes per second and the share on mutual TLS.
    Stat(StatArgs),
    /// Who talked to whom over a window, with which identities, over mutual TLS or not.
    ///
    /// Each client and server workload pair, both SPIFFE identities, and whether the
    /// connections were mutual TLS (plaintext edges stand out).
    Edges(EdgesArgs),
    /// Golden metrics per route of a service over a window.
    ///
    /// Per VirtualService http route, HTTPRoute rule or ServiceProfile route of the service,
    /// and `[default]` for requests no route took: success rate, requests per second and
    /// latency percentiles, from the waypoints' per-route metrics.
    Routes(RoutesArgs),
    /// Every proxy's connection to the controller and how far its config is synced.
    ///
    /// Every ztunnel and waypoint: connected or not, per xDS type whether it ACKed the
    /// controller's current version (SYNCED, STALE, NACK), and when its first certificate
    /// expires. Exit status 1 when one is disconnected or NACKed.
    ProxyStatus(OutputArgs),
    /// The mesh's certificate authority: a root rotation's status, and rotating the root.
    #[command(subcommand)]
    Ca(super::ca::CaCommand),
    /// Live requests through the waypoints and connections through the ztunnels.
    ///
    /// As they happen. Requests: method, authority, path, status, latency, route, caller
    /// identity, upstream, flags. Connections (a deployment's inbound and outbound, a
    /// service's inbound): open and close, both identities, mutual TLS, bytes and duration,
    /// the policy verdict.
    Tap(TapArgs),
    /// The most requested (source, method, path) to a deployment or service, live.
    ///
    /// Like `linkerd viz top`: count, success rate, latency p50 and max per row, redrawn at
    /// most every second on a terminal; the final table when `--max` requests are counted
    /// or on Ctrl-C (the only output when not on a terminal).
    Top(TopArgs),
    /// What one proxy holds: workloads, services, policies or certs.
    ///
    /// From its config dump: `proxy-config workloads ztunnel node1`, `proxy-config certs
    /// waypoint shop/waypoint`.
    ProxyConfig(ProxyConfigArgs),
    /// Serve a web UI of the mesh: overview, service graph, workloads, certificates.
    ///
    /// The same data as `check`, `stat`, `edges`, `routes`, `tap` and `proxy-config certs`,
    /// refreshed live in the browser. Listens on 127.0.0.1 only unless --allow-remote.
    Dashboard(DashboardArgs),
    /// Report what the mesh would not act on in files, without applying them.
    ///
    /// Objects it does not read, fields it ignores, policies it cannot enforce: against the
    /// sandbox's objects when it is up, else on their own; in Kubernetes mode, against the
    /// cluster's objects (all of them when no file is given).
    Analyze(AnalyzeArgs),
    /// Set (`key=value`) or remove (`key-`) labels on a namespace or pod.
    Label(LabelArgs),
    /// Run a command inside a pod's network namespace.
    Exec(ExecArgs),
    /// Print a pod's output, or a system component's (controller, ztunnel,
    /// node-agent).
    Logs(LogsArgs),
    /// Start a stopped system component (controller, ztunnel, node-agent, kubelet).
    Start(ComponentArgs),
    /// Stop a system component (controller, ztunnel, node-agent, kubelet).
    Stop(ComponentArgs),
    /// Restart a system component with the same arguments. A ztunnel is replaced without a
    /// gap, as a surging DaemonSet update does: the new one starts beside the old one, which
    /// drains once the new one is ready and serves every pod.
    Restart(ComponentArgs),
    /// The controller's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Tear the sandbox down: processes, namespaces, files.
    Down(DownArgs),
    /// Watch an owner process and tear the sandbox down when it exits.
    #[command(hide = true)]
    SandboxReaper(ReaperArgs),
    /// Forward inherited host listeners into a namespace.
    #[command(hide = true)]
    SandboxForward(ForwardArgs),
    /// Run the health probes of one node's pods from that node, as kubelet does.
    #[command(hide = true)]
    SandboxKubelet(KubeletArgs),
    /// Run a pod's process confined (what pods and `exec` are started with).
    #[command(hide = true)]
    SandboxContainer(ContainerArgs),
}

/// `sandbox-container`.
#[derive(clap::Args, Debug)]
pub struct ContainerArgs {
    /// Inherited descriptor holding what to run.
    #[arg(long)]
    pub spec_fd: i32,
    /// What runs, for `ps` (the description is authoritative).
    #[arg(long = "for")]
    pub what: Option<String>,
}

/// `up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Manifests: a folder (its *.yaml, *.yml, *.json) or a file.
    pub folder: Option<PathBuf>,
    /// Number of nodes.
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    /// Tear the sandbox down automatically when this process exits.
    #[arg(long)]
    pub owner_pid: Option<i32>,
    /// Do not start a ztunnel and a node agent on each node.
    #[arg(long)]
    pub no_ztunnel: bool,
    /// Host port (on 127.0.0.1) for the controller's admin endpoint; 0 picks
    /// a free port [default: 15014, or a free port when that is taken].
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Host port (on 127.0.0.1) for the controller's xDS and CA endpoint; 0
    /// picks a free port.
    #[arg(long, default_value_t = 0)]
    pub xds_port: u16,
    /// An extra argument for every node's `ztunnel proxy` (repeatable, in
    /// order), e.g. `--ztunnel-arg=--cert-ttl-secs --ztunnel-arg=20`; kept
    /// for restarts.
    #[arg(long = "ztunnel-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub ztunnel_args: Vec<String>,
    /// An extra argument for every waypoint (repeatable, in order), e.g.
    /// `--waypoint-arg=--cert-ttl-secs=20`.
    #[arg(long = "waypoint-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub waypoint_args: Vec<String>,
    /// Run this node proxy binary instead of `ztunnel proxy` (Istio's ztunnel,
    /// configured through its environment variables): `PATH` on every node,
    /// `NODE=PATH` on one (repeatable; a mixed cluster).
    #[arg(long = "node-proxy", value_name = "[NODE=]PATH")]
    pub node_proxies: Vec<String>,
}

/// `start` / `stop` / `restart`.
#[derive(clap::Args, Debug)]
pub struct ComponentArgs {
    /// controller, ztunnel, node-agent or kubelet.
    pub component: String,
    /// The node (ztunnel, node-agent); default: every node.
    #[arg(long)]
    pub node: Option<String>,
}

/// `config`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the controller's current configuration (/debug/config_dump).
    Dump,
}

/// `sandbox-kubelet`.
#[derive(clap::Args, Debug)]
pub struct KubeletArgs {
    /// The node whose pods it probes.
    #[arg(long)]
    pub node: String,
}

/// `sandbox-forward`.
#[derive(clap::Args, Debug)]
pub struct ForwardArgs {
    /// Namespace to connect in.
    #[arg(long)]
    pub netns: String,
    /// FD=PORT: accept on inherited descriptor FD, connect to 127.0.0.1:PORT.
    #[arg(long = "forward", required = true)]
    pub forwards: Vec<Forward>,
}

/// `get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// pods (po), services (svc), namespaces (ns), nodes (no) or controller.
    pub kind: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: table (default) or json (pods and controller).
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `apply` / `delete`.
#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// Files or folders of manifests, `-` for stdin.
    #[arg(short, long = "filename", required = true)]
    pub file: Vec<PathBuf>,
}

/// `analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or folders of manifests, `-` for stdin (required on the sandbox; in Kubernetes
    /// mode, without them, the cluster's objects are analyzed).
    #[arg(short, long = "filename")]
    pub file: Vec<PathBuf>,
    /// Output format: text (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `stat`.
#[derive(clap::Args, Debug)]
pub struct StatArgs {
    /// deploy, svc or ns, optionally with a name: `deploy/orders`.
    pub resource: String,
    /// Where and how long to watch.
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Ask this Prometheus (http://host:port) instead of scraping the proxies.
    ///
    /// The rows are its answers over the last --window, at once, from the queries of
    /// Istio's dashboards (counts are Prometheus's extrapolated `increase`). On the sandbox,
    /// meshctl connects from the control plane's network namespace (ms-<sandbox>.control),
    /// which reaches every node address (ztunnels, :15020) and pod address (waypoints,
    /// :15020): run Prometheus there, e.g. `ip netns exec ms-<sandbox>.control prometheus
    /// --web.listen-address=127.0.0.1:9090 ...`, and pass http://127.0.0.1:9090. In
    /// Kubernetes mode meshctl connects to the URL itself (a port-forward, say).
    #[arg(long, value_name = "URL")]
    pub prometheus: Option<String>,
}

/// What the verbs that watch the proxies over a window (`stat`, `edges`, `routes`) take.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// How long to watch: `30s`, `2m`, `500ms` (a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_window)]
    pub window: std::time::Duration,
    /// Output format: table (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `30s`, `2m`, `500ms`, `1h` or a bare number of seconds; at most an hour.
pub fn parse_window(text: &str) -> std::result::Result<std::time::Duration, String> {
    match super::duration::parse_duration(text)? {
        d if d.is_zero() => Err("the window must be longer than 0".to_owned()),
        d if d > std::time::Duration::from_secs(3600) => Err(format!("{text:?}: at most 1h")),
        d => Ok(d),
    }
}

/// `edges`.
#[derive(clap::Args, Debug)]
pub struct EdgesArgs {
    /// deploy (edges are between workloads).
    pub resource: String,
    /// Where (edges with either end in the namespace) and how long to watch.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `routes`.
#[derive(clap::Args, Debug)]
pub struct RoutesArgs {
    /// svc/NAME.
    pub resource: String,
    /// Where (one namespace: `-A` is refused) and how long to watch.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `tap`.
#[derive(clap::Args, Debug)]
pub struct TapArgs {
    /// deploy/NAME or svc/NAME.
    pub resource: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Only this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only paths starting with this.
    #[arg(long)]
    pub path: Option<String>,
    /// Stop after this many events of the kind shown.
    #[arg(long)]
    pub max: Option<u64>,
    /// request, connection or all [default: request when a waypoint serves the target
    /// (istio.io/use-waypoint on it or its namespace), else connection].
    #[arg(long)]
    pub kind: Option<String>,
    /// Output format: text (default) or json (a line per event).
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `top`.
#[derive(clap::Args, Debug)]
pub struct TopArgs {
    /// deploy/NAME or svc/NAME.
    pub resource: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Only this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only paths starting with this.
    #[arg(long)]
    pub path: Option<String>,
    /// Stop after this many requests (else at Ctrl-C).
    #[arg(long)]
    pub max: Option<u64>,
    /// Output format: table (default) or json (an array of rows, at the end).
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `dashboard`.
#[derive(clap::Args, Debug)]
pub struct DashboardArgs {
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50750")]
    pub address: std::net::SocketAddr,
    /// Print the URL only; do not try to open a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Allow an address other than loopback: anyone who reaches it sees the mesh.
    #[arg(long)]
    pub allow_remote: bool,
    /// How often the graph, the metrics and the checks are refreshed.
    #[arg(long, default_value = "5s", value_parser = parse_window)]
    pub refresh: std::time::Duration,
    /// What rates, success and latency are measured over (as `stat --window`).
    #[arg(long, default_value = "30s", value_parser = parse_window)]
    pub window: std::time::Duration,
}

impl DashboardArgs {
    /// How the dashboard runs, as these flags say.
    pub fn options(&self) -> crate::dashboard::DashboardOptions {
        crate::dashboard::DashboardOptions {
            address: self.address,
            allow_remote: self.allow_remote,
            open_browser: !self.no_browser,
            refresh: self.refresh,
            window: self.window,
        }
    }
}

/// Verbs that only choose their output.
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// Output format: table (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `proxy-config`.
#[derive(clap::Args, Debug)]
pub struct ProxyConfigArgs {
    /// workloads, services, policies or certs.
    pub section: String,
    /// ztunnel or waypoint.
    pub proxy: String,
    /// The ztunnel's node (`node1`), or the waypoint as NAMESPACE/NAME (its Gateway's or its
    /// pod's name).
    pub target: String,
    /// Output format: table (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
}

/// `check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Output format: text (default) or json.
    #[arg(short, long)]
    pub output: Option<String>,
    /// Check this host before a sandbox is made: root, the programs it needs, the mesh's
    /// binaries, and in-pod capture installed in a throwaway network namespace.
    #[arg(long)]
    pub pre: bool,
}

/// `label`.
#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    /// namespace (ns) or pod (po).
    pub kind: String,
    /// Object name.
    pub name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true)]
    pub labels: Vec<String>,
    /// Namespace of a pod.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Accepted for kubectl compatibility (labels are always overwritten).
    #[arg(long)]
    pub overwrite: bool,
}

/// `exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Pod name, or deploy/NAME for a pod of a Deployment.
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container whose environment to use (default: the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Accepted for kubectl compatibility: stdin is always passed through.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// Accepted for kubectl compatibility: the terminal is always inherited.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The command, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Pod name, or deploy/NAME; or controller, ztunnel, node-agent, kubelet (when no
    /// pod of that name exists).
    pub pod: String,
    /// Node of a ztunnel or node agent.
    #[arg(long)]
    pub node: Option<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container (default: the first).
    #[arg(short, long)]
    pub container: Option<String>,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
}

/// `down`.
#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// Every sandbox on this machine.
    #[arg(long)]
    pub all: bool,
}

/// `sandbox-reaper`.
#[derive(clap::Args, Debug)]
pub struct ReaperArgs {
    /// The owner.
    #[arg(long)]
    pub owner_pid: i32,
    /// The owner's start time, guarding against PID reuse.
    #[arg(long)]
    pub owner_start: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SandboxCommand,
    }

    #[test]
    fn windows_read_units_and_refuse_nonsense() {
        let ms = |text| parse_window(text).map(|d| d.as_millis());
        assert_eq!(ms("30s"), Ok(30_000));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("10"), Ok(10_000));
        for bad in ["", "0s", "2d", "s", "-1s", "61m", "99999999999999999999h"] {
            assert!(parse_window(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ztunnel_args_accept_values_that_look_like_flags() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "up",
            "--ztunnel-arg",
            "--cert-ttl-secs",
            "--ztunnel-arg=20",
            "--nodes",
            "3",
        ])
        .unwrap();
        let SandboxCommand::Up(up) = cli.command else {
            panic!("not `up`");
        };
        assert_eq!(up.ztunnel_args, ["--cert-ttl-secs", "20"]);
        assert_eq!(up.nodes, 3);
    }
}
