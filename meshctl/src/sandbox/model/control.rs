//! The mesh's system components as the sandbox runs them, as a model: the
//! control-plane namespace, the controller, and per node a ztunnel and a
//! node agent (like a DaemonSet pod with hostNetwork). Pure: which
//! processes exist, with which arguments, where their files are. Starting
//! and stopping them is in `ops::system`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ids::ProcId;

/// Fabric address of the control-plane namespace. Nodes use
/// 172.18.0.2..=172.18.0.51, so the other end of the /16 never collides.
pub const CONTROL_IP: Ipv4Addr = Ipv4Addr::new(172, 18, 255, 1);
/// The controller's gRPC port (xDS and CA over TLS), as Istio's istiod.
pub const XDS_PORT: u16 = 15012;
/// The controller's admin port (`/metrics`, `/ready`, `/debug/config_dump`).
pub const ADMIN_PORT: u16 = 15014;
/// Namespace of the mesh's own workloads, whose policies apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";
/// The mesh's trust domain (the first segment of every SPIFFE identity).
pub const TRUST_DOMAIN: &str = "cluster.local";
/// Identity node tokens stand for: the ztunnel service account.
pub const ZTUNNEL_IDENTITY: &str = "spiffe://cluster.local/ns/istio-system/sa/ztunnel";
/// Identity the controller serves xDS and CA with.
pub const CONTROLLER_IDENTITY: &str = "spiffe://cluster.local/ns/istio-system/sa/controller";
/// The controller's push debounce in the sandbox: short, so changes land fast.
pub const DEBOUNCE_MS: u64 = 50;
/// How often the controller rescans the state folder: every change made by
/// `apply`, `delete` or `label` reaches it well within a second.
pub const SCAN_INTERVAL_MS: u64 = 200;
/// File-name prefix of waypoint tokens (node names never start with it).
pub const WAYPOINT_TOKEN_PREFIX: &str = "waypoint-";
/// Where each node agent serves its own `/metrics` in its node's namespace (istio-cni's
/// monitoring port; the controller's 15014 is in another namespace).
pub const NODE_AGENT_METRICS_PORT: u16 = 15014;
/// How long the controller may take to shut down on SIGTERM: it waits up to
/// 5 s for gRPC streams to drain and 1 s for its admin endpoint.
pub const CONTROLLER_SHUTDOWN: Duration = Duration::from_secs(6);
/// The drain deadline of `ztunnel proxy` when its command line sets none
/// (its `--drain-secs` default).
pub const ZTUNNEL_DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// Time a process gets on top of its own shutdown deadline to exit before it
/// is killed.
pub const STOP_MARGIN: Duration = Duration::from_secs(2);

/// The identity of the waypoint of Gateway `namespace/name`: its pods run as
/// the service account named after the Gateway, as Istio deploys them.
pub fn waypoint_identity(namespace: &str, name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{name}")
}

/// A system component of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "node", rename_all = "kebab-case")]
pub enum Component {
    /// The control plane.
    Controller,
    /// The node proxy of a node.
    Ztunnel(String),
    /// The node agent (capture) of a node.
    NodeAgent(String),
    /// The kubelet prober of a node (`meshctl sandbox-kubelet`): runs pods' health probes
    /// from the node's namespace.
    Kubelet(String),
}

impl Component {
    /// `controller`, `ztunnel-node1`, `node-agent-node1`, `kubelet-node1`: also the log
    /// file's stem.
    pub fn name(&self) -> String {
        match self {
            Component::Controller => "controller".into(),
            Component::Ztunnel(n) => format!("ztunnel-{n}"),
            Component::NodeAgent(n) => format!("node-agent-{n}"),
            Component::Kubelet(n) => format!("kubelet-{n}"),
        }
    }

    /// The node of a per-node component.
    pub fn node(&self) -> Option<&str> {
        match self {
            Component::Controller => None,
            Component::Ztunnel(n) | Component::NodeAgent(n) | Component::Kubelet(n) => Some(n),
        }
    }
}

/// A running (or stopped) system process and how to start it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemProcess {
    /// What it is.
    pub component: Component,
    /// Network namespace it runs in.
    pub netns: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment on top of every system component's (a foreign node
    /// proxy is configured through it).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Output file.
    pub log: PathBuf,
    /// The process; `None` when stopped or never started.
    pub process: Option<ProcId>,
}

impl SystemProcess {
    /// How long `stop` waits between SIGTERM and SIGKILL: the component's
    /// own shutdown deadline (a ztunnel's drain, from its command line) plus
    /// [`STOP_MARGIN`], so a clean shutdown is never cut short.
    pub fn stop_grace(&self) -> Duration {
        let shutdown = match self.component {
            Component::Controller => CONTROLLER_SHUTDOWN,
            Component::Ztunnel(_) => flag_value(&self.argv, "--drain-secs")
                .and_then(|v| v.parse().ok())
                .map_or(ZTUNNEL_DEFAULT_DRAIN, Duration::from_secs),
            Component::NodeAgent(_) | Component::Kubelet(_) => Duration::ZERO,
        };
        shutdown + STOP_MARGIN
    }
}

/// The value of the last `flag VALUE` or `flag=VALUE` in `argv` (the last
/// one is what a command-line parser keeps when it allows repeats).
fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    for (i, arg) in argv.iter().enumerate() {
        if arg == flag {
            found = argv.get(i + 1).map(String::as_str);
        } else if let Some(v) = arg.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v);
        }
    }
    found
}

/// The control plane of a sandbox and its system processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPlane {
    /// Network namespace of the controller, on the fabric bridge.
    pub netns: String,
    /// Its fabric address.
    pub ip: Ipv4Addr,
    /// Host port (127.0.0.1) forwarded to the admin endpoint.
    pub admin_port: u16,
    /// Host port (127.0.0.1) forwarded to the gRPC endpoint.
    pub xds_port: u16,
    /// The host-side port forwarder.
    pub forwarder: Option<ProcId>,
    /// Controller, ztunnels and node agents.
    pub processes: Vec<SystemProcess>,
    /// Extra arguments every node's `ztunnel proxy` gets (`up --ztunnel-arg`).
    #[serde(default)]
    pub ztunnel_args: Vec<String>,
    /// Extra arguments every waypoint gets (`up --waypoint-arg`).
    #[serde(default)]
    pub waypoint_args: Vec<String>,
    /// Node proxy programs that replace `ztunnel proxy` (`up --node-proxy`).
    #[serde(default)]
    pub node_proxies: Vec<NodeProxyProgram>,
}

/// A node proxy program other than the mesh's own `ztunnel proxy` that speaks
/// the same protocols (Istio's ztunnel): started with no arguments and
/// configured through Istio's environment variables ([`istio_node_proxy_env`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProxyProgram {
    /// The node it runs on; `None`: every node that has none of its own.
    pub node: Option<String>,
    /// The binary (absolute).
    pub path: PathBuf,
}

/// How a system process is started: program and arguments, and environment on
/// top of the system components' own.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl ControlPlane {
    /// Every recorded process (forwarder included).
    pub fn all_processes(&self) -> Vec<ProcId> {
        let mut v: Vec<ProcId> = self.processes.iter().filter_map(|p| p.process).collect();
        v.extend(self.forwarder);
        v
    }

    /// The record of `component`.
    pub fn find(&self, component: &Component) -> Option<&SystemProcess> {
        self.processes.iter().find(|p| &p.component == component)
    }

    /// The record of `component`, for update.
    pub fn find_mut(&mut self, component: &Component) -> Option<&mut SystemProcess> {
        self.processes
            .iter_mut()
            .find(|p| &p.component == component)
    }

    /// The command line `component` first starts with: the layout's, plus
    /// the extra arguments of `up --ztunnel-arg` for node proxies. Once
    /// started, the recorded command line is what restarts reuse.
    pub fn argv(&self, layout: &Layout, component: &Component) -> Vec<String> {
        let mut argv = layout.argv(component, self.ip);
        if matches!(component, Component::Ztunnel(_)) {
            argv.extend(self.ztunnel_args.iter().cloned());
        }
        argv
    }

    /// The foreign node proxy program of `node`, if it has one: its own
    /// entry, else the every-node one.
    pub fn node_proxy(&self, node: &str) -> Option<&Path> {
        let of = |n: Option<&str>| {
            self.node_proxies
                .iter()
                .rev()
                .find(|p| p.node.as_deref() == n)
        };
        of(Some(node))
            .or_else(|| of(None))
            .map(|p| p.path.as_path())
    }

    /// How `component` first starts: a node with a foreign node proxy runs
    /// that program with Istio's environment, everything else
    /// [`ControlPlane::argv`].
    pub fn launch(&self, layout: &Layout, component: &Component) -> Launch {
        if let Component::Ztunnel(node) = component
            && let Some(program) = self.node_proxy(node)
        {
            return Launch {
                argv: vec![program.display().to_string()],
                env: istio_node_proxy_env(layout, node, self.ip),
            };
        }
        Launch {
            argv: self.argv(layout, component),
            env: Vec::new(),
        }
    }
}

/// The environment Istio's ztunnel reads its control plane, credentials and
/// node agent from (names and meanings from its documented configuration):
/// xDS and CA at the controller's address (verified by that IP, which the
/// controller's certificate carries), the sandbox's root, the node's token
/// (sent as a bearer token, as a projected service account token would be),
/// the node agent's ZDS socket, and the ztunnel's own pod identity.
pub fn istio_node_proxy_env(
    layout: &Layout,
    node: &str,
    control_ip: Ipv4Addr,
) -> Vec<(String, String)> {
    let controller = format!("https://{control_ip}:{XDS_PORT}");
    let root = Layout::path(layout.root_cert());
    [
        ("XDS_ADDRESS", controller.clone()),
        ("CA_ADDRESS", controller),
        ("XDS_ROOT_CA", root.clone()),
        ("CA_ROOT_CA", root),
        ("AUTH_TOKEN", Layout::path(layout.token_file(node))),
        ("INPOD_UDS", Layout::path(layout.zds_socket(node))),
        ("NODE_NAME", node.to_string()),
        ("POD_NAME", format!("ztunnel-{node}")),
        ("POD_NAMESPACE", ROOT_NAMESPACE.to_string()),
        ("SERVICE_ACCOUNT", "ztunnel".to_string()),
        ("TRUST_DOMAIN", TRUST_DOMAIN.to_string()),
        ("CLUSTER_ID", "Kubernetes".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Where the system components' files live in a state folder.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state folder.
    pub state_dir: PathBuf,
    /// Folder of the binaries.
    pub bin_dir: PathBuf,
}

impl Layout {
    /// Layout of `state_dir`, binaries from `bin_dir`.
    pub fn new(state_dir: &Path, bin_dir: &Path) -> Layout {
        Layout {
            state_dir: state_dir.to_path_buf(),
            bin_dir: bin_dir.to_path_buf(),
        }
    }

    /// The CA folder (`root-cert.pem` appears there once the controller runs).
    pub fn ca_dir(&self) -> PathBuf {
        self.state_dir.join("ca")
    }

    /// The root certificate ztunnels and clients trust.
    pub fn root_cert(&self) -> PathBuf {
        self.ca_dir().join("root-cert.pem")
    }

    /// Token → caller map the controller reads.
    pub fn tokens_file(&self) -> PathBuf {
        self.state_dir.join("tokens.yaml")
    }

    /// Folder of per-node token files.
    pub fn tokens_dir(&self) -> PathBuf {
        self.state_dir.join("tokens")
    }

    /// A node's token file.
    pub fn token_file(&self, node: &str) -> PathBuf {
        self.tokens_dir().join(node)
    }

    /// The token file of the waypoint of Gateway `namespace/name`:
    /// `waypoint-<namespace>.<name>`. Namespace names hold no dot, so no two
    /// Gateways share a file (with `-` as separator, `a-b/c` and `a/b-c`
    /// would).
    pub fn waypoint_token_file(&self, namespace: &str, name: &str) -> PathBuf {
        self.tokens_dir()
            .join(format!("{WAYPOINT_TOKEN_PREFIX}{namespace}.{name}"))
    }

    /// Folder of the nodes' ZDS sockets.
    pub fn zds_dir(&self) -> PathBuf {
        self.state_dir.join("zds")
    }

    /// A node's ZDS socket.
    pub fn zds_socket(&self, node: &str) -> PathBuf {
        self.zds_dir().join(format!("{node}.sock"))
    }

    /// A node agent's CNI socket, which the node's CNI plugin asks.
    pub fn cni_socket(&self, node: &str) -> PathBuf {
        self.zds_dir().join(format!("{node}-cni.sock"))
    }

    /// Folder of `<namespace>.<pod>` links to pod network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }

    /// The log file of a component.
    pub fn log(&self, component: &Component) -> PathBuf {
        self.state_dir
            .join("logs")
            .join(format!("{}.log", component.name()))
    }

    fn bin(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    fn path(p: PathBuf) -> String {
        p.display().to_string()
    }

    /// The command line of `component`.
    pub fn argv(&self, component: &Component, control_ip: Ipv4Addr) -> Vec<String> {
        let controller = format!("{control_ip}:{XDS_PORT}");
        let mut v: Vec<String> = Vec::new();
        match component {
            Component::Controller => {
                v.push(self.bin("controller"));
                // The state root itself is not a config folder: state.json
                // and tokens.yaml would be read as manifests.
                for dir in ["manifests", "pods"] {
                    v.extend(["--config-dir".into(), Self::path(self.state_dir.join(dir))]);
                }
                v.extend([
                    "--ca-dir".into(),
                    Self::path(self.ca_dir()),
                    "--tokens-file".into(),
                    Self::path(self.tokens_file()),
                    "--xds-addr".into(),
                    format!("0.0.0.0:{XDS_PORT}"),
                    "--admin-addr".into(),
                    format!("0.0.0.0:{ADMIN_PORT}"),
                    "--root-namespace".into(),
                    ROOT_NAMESPACE.into(),
                    "--debounce-ms".into(),
                    DEBOUNCE_MS.to_string(),
                    "--scan-interval-ms".into(),
                    SCAN_INTERVAL_MS.to_string(),
                    // Clients that verify the controller by the IP they dial (Istio's ztunnel
                    // with CA_ADDRESS=https://<ip>:15012) find it in the certificate.
                    "--serving-san".into(),
                    control_ip.to_string(),
                ]);
            }
            Component::Ztunnel(node) | Component::NodeAgent(node) => {
                let role = if matches!(component, Component::Ztunnel(_)) {
                    "proxy"
                } else {
                    "node-agent"
                };
                v.extend([
                    self.bin("ztunnel"),
                    role.into(),
                    "--node".into(),
                    node.clone(),
                    "--controller".into(),
                    controller,
                    "--root-cert".into(),
                    Self::path(self.root_cert()),
                    "--token-file".into(),
                    Self::path(self.token_file(node)),
                    "--zds-socket".into(),
                    Self::path(self.zds_socket(node)),
                ]);
                if role == "node-agent" {
                    v.extend(["--netns-dir".into(), Self::path(self.netns_dir())]);
                    v.extend(["--cni-socket".into(), Self::path(self.cni_socket(node))]);
                    // The agent runs in the node's namespace itself (as with hostNetwork).
                    v.extend(["--host-netns".into(), "/proc/self/ns/net".into()]);
                    v.extend([
                        "--metrics-addr".into(),
                        format!("0.0.0.0:{NODE_AGENT_METRICS_PORT}"),
                    ]);
                }
            }
            Component::Kubelet(node) => {
                v.extend([
                    self.bin("meshctl"),
                    "--state-dir".into(),
                    Self::path(self.state_dir.clone()),
                    "sandbox-kubelet".into(),
                    "--node".into(),
                    node.clone(),
                ]);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(Path::new("/run/meshctl/t"), Path::new("/opt/bin"))
    }

    #[test]
    fn controller_reads_only_manifests_and_pods() {
        let argv = layout().argv(&Component::Controller, CONTROL_IP);
        assert_eq!(argv[0], "/opt/bin/controller");
        let dirs: Vec<&String> = argv
            .windows(2)
            .filter(|w| w[0] == "--config-dir")
            .map(|w| &w[1])
            .collect();
        assert_eq!(
            dirs,
            ["/run/meshctl/t/manifests", "/run/meshctl/t/pods"]
                .map(String::from)
                .iter()
                .collect::<Vec<_>>()
        );
        let joined = argv.join(" ");
        assert!(joined.contains("--xds-addr 0.0.0.0:15012"));
        assert!(joined.contains("--admin-addr 0.0.0.0:15014"));
        assert!(joined.contains("--ca-dir /run/meshctl/t/ca"));
        assert!(joined.contains("--tokens-file /run/meshctl/t/tokens.yaml"));
        assert!(joined.contains("--serving-san 172.18.255.1"));
    }

    #[test]
    fn node_components_point_at_the_control_plane() {
        let l = layout();
        let proxy = l
            .argv(&Component::Ztunnel("node2".into()), CONTROL_IP)
            .join(" ");
        assert_eq!(
            proxy,
            "/opt/bin/ztunnel proxy --node node2 --controller 172.18.255.1:15012 \
             --root-cert /run/meshctl/t/ca/root-cert.pem --token-file /run/meshctl/t/tokens/node2 \
             --zds-socket /run/meshctl/t/zds/node2.sock"
        );
        let agent = l.argv(&Component::NodeAgent("node2".into()), CONTROL_IP);
        assert_eq!(agent[1], "node-agent");
        assert_eq!(
            agent[agent.len() - 8..],
            [
                "--netns-dir",
                "/run/meshctl/t/netns",
                "--cni-socket",
                "/run/meshctl/t/zds/node2-cni.sock",
                "--host-netns",
                "/proc/self/ns/net",
                "--metrics-addr",
                "0.0.0.0:15014"
            ]
        );
        assert_eq!(
            l.log(&Component::NodeAgent("node2".into())),
            Path::new("/run/meshctl/t/logs/node-agent-node2.log")
        );
        let kubelet = l
            .argv(&Component::Kubelet("node2".into()), CONTROL_IP)
            .join(" ");
        assert_eq!(
            kubelet,
            "/opt/bin/meshctl --state-dir /run/meshctl/t sandbox-kubelet --node node2"
        );
    }

    fn control_plane(ztunnel_args: &[&str]) -> ControlPlane {
        ControlPlane {
            netns: "ms-t.control".into(),
            ip: CONTROL_IP,
            admin_port: 0,
            xds_port: 0,
            forwarder: None,
            processes: Vec::new(),
            ztunnel_args: ztunnel_args.iter().map(|a| a.to_string()).collect(),
            waypoint_args: Vec::new(),
            node_proxies: Vec::new(),
        }
    }

    #[test]
    fn extra_ztunnel_arguments_go_to_every_node_proxy_only() {
        let l = layout();
        let cp = control_plane(&["--cert-ttl-secs", "20"]);
        for node in ["node1", "node2"] {
            let proxy = cp.argv(&l, &Component::Ztunnel(node.into()));
            assert_eq!(proxy[proxy.len() - 2..], ["--cert-ttl-secs", "20"]);
            let agent = cp.argv(&l, &Component::NodeAgent(node.into()));
            assert!(!agent.contains(&"--cert-ttl-secs".to_string()), "{agent:?}");
        }
        assert!(
            !cp.argv(&l, &Component::Controller)
                .contains(&"--cert-ttl-secs".to_string())
        );
    }

    #[test]
    fn stop_grace_covers_each_components_own_shutdown() {
        let l = layout();
        let record = |component: Component, extra: &[&str]| SystemProcess {
            argv: control_plane(extra).argv(&l, &component),
            env: Vec::new(),
            log: l.log(&component),
            netns: "n".into(),
            process: None,
            component,
        };
        let proxy = |extra: &[&str]| record(Component::Ztunnel("node1".into()), extra).stop_grace();
        assert_eq!(proxy(&[]), ZTUNNEL_DEFAULT_DRAIN + STOP_MARGIN);
        assert_eq!(proxy(&["--drain-secs", "5"]), Duration::from_secs(7));
        assert_eq!(
            proxy(&["--drain-secs=5", "--drain-secs=9"]),
            Duration::from_secs(11)
        );
        assert_eq!(
            record(Component::Controller, &[]).stop_grace(),
            CONTROLLER_SHUTDOWN + STOP_MARGIN
        );
        assert_eq!(
            record(Component::NodeAgent("node1".into()), &[]).stop_grace(),
            STOP_MARGIN
        );
    }

    #[test]
    fn a_foreign_node_proxy_runs_bare_with_istios_environment() {
        let l = layout();
        let mut cp = control_plane(&["--cert-ttl-secs", "20"]);
        cp.node_proxies = vec![
            NodeProxyProgram {
                node: None,
                path: "/opt/istio/ztunnel".into(),
            },
            NodeProxyProgram {
                node: Some("node2".into()),
                path: "/opt/other/ztunnel".into(),
            },
        ];
        let node1 = cp.launch(&l, &Component::Ztunnel("node1".into()));
        assert_eq!(node1.argv, ["/opt/istio/ztunnel"]);
        let env: std::collections::BTreeMap<_, _> = node1.env.iter().cloned().collect();
        assert_eq!(env["XDS_ADDRESS"], "https://172.18.255.1:15012");
        assert_eq!(env["CA_ADDRESS"], "https://172.18.255.1:15012");
        assert_eq!(env["CA_ROOT_CA"], "/run/meshctl/t/ca/root-cert.pem");
        assert_eq!(env["XDS_ROOT_CA"], "/run/meshctl/t/ca/root-cert.pem");
        assert_eq!(env["AUTH_TOKEN"], "/run/meshctl/t/tokens/node1");
        assert_eq!(env["INPOD_UDS"], "/run/meshctl/t/zds/node1.sock");
        assert_eq!(env["NODE_NAME"], "node1");
        // Its own identity is the one node tokens stand for.
        let identity = format!(
            "spiffe://{}/ns/{}/sa/{}",
            env["TRUST_DOMAIN"], env["POD_NAMESPACE"], env["SERVICE_ACCOUNT"]
        );
        assert_eq!(identity, ZTUNNEL_IDENTITY);
        // A node's own program wins over the every-node one.
        let node2 = cp.launch(&l, &Component::Ztunnel("node2".into()));
        assert_eq!(node2.argv, ["/opt/other/ztunnel"]);
        // The node agent stays the mesh's own.
        let agent = cp.launch(&l, &Component::NodeAgent("node1".into()));
        assert_eq!(agent.argv[1], "node-agent");
        assert!(agent.env.is_empty());
    }

    #[test]
    fn without_a_foreign_node_proxy_the_mesh_runs_its_own() {
        let l = layout();
        let mut cp = control_plane(&[]);
        cp.node_proxies = vec![NodeProxyProgram {
            node: Some("node2".into()),
            path: "/opt/istio/ztunnel".into(),
        }];
        let node1 = cp.launch(&l, &Component::Ztunnel("node1".into()));
        assert_eq!(node1.argv, cp.argv(&l, &Component::Ztunnel("node1".into())));
        assert!(node1.env.is_empty());
    }

    #[test]
    fn components_serialize_readably() {
        let json = serde_json::to_string(&Component::Ztunnel("node1".into())).unwrap();
        assert_eq!(json, r#"{"kind":"ztunnel","node":"node1"}"#);
        let back: Component = serde_json::from_str(r#"{"kind":"controller"}"#).unwrap();
        assert_eq!(back, Component::Controller);
    }
}
