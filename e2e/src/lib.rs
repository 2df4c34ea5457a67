//! End-to-end harness: drives the sandbox for the tests in `tests/`.
//!
//! Each [`Sandbox`] is a real cluster of network namespaces built by the
//! `meshctl` binary of the same build (`target/<profile>/meshctl`), with a
//! unique name so tests run in parallel. It is torn down by [`Sandbox::down`]
//! or on drop (panics included), and — should the test process be killed —
//! by the reaper `meshctl up --owner-pid` starts.
//!
//! Shared by the tests and the benchmarks: [`manifests`] (the pieces their
//! sandboxes are written in), [`mesh`] (the node proxies as their admin
//! endpoints show them), [`metrics`] (Prometheus text) and [`measure`]
//! (process CPU and memory, run settings), and [`traces`] (the spans an OTLP receiver
//! pod holds).

pub mod examples;
pub mod manifests;
pub mod measure;
pub mod mesh;
pub mod metrics;
pub mod traces;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use meshctl::app::load_report::LoadReport;

/// Harness errors; messages carry the failing command's output.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The meshctl binary is missing.
    #[error("meshctl binary not found at {0}: run `cargo build --workspace --bins` first")]
    NoBinary(PathBuf),
    /// A meshctl command failed.
    #[error("`meshctl {args}` failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}")]
    Command {
        /// Arguments.
        args: String,
        /// Exit status.
        status: String,
        /// Captured stdout.
        stdout: String,
        /// Captured stderr.
        stderr: String,
    },
    /// Spawning or file I/O failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Output could not be understood.
    #[error("{0}")]
    Parse(String),
    /// A state waited for was not reached in time.
    #[error("{0}")]
    Timeout(String),
}

/// Result alias of the harness.
pub type Result<T> = std::result::Result<T, Error>;

pub use meshctl::sandbox::model::control::Component;

/// The SPIFFE identity the sandbox's controller serves as.
pub const CONTROLLER_IDENTITY: &str = "spiffe://cluster.local/ns/istio-system/sa/controller";

/// How long the mesh gets to reach a state a test waits for. Generous: a
/// loaded machine runs several sandboxes at once. Never asserted as a
/// duration.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Polls `cond` every 200 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Parses JSON or fails the test with the text.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Whether process `pid` is gone, or a zombie (which holds no namespace and
/// never runs again).
pub fn process_exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// How to build a sandbox.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of nodes (default 2).
    pub nodes: u32,
    /// Process whose exit tears the sandbox down (default: this test process).
    pub owner_pid: u32,
    /// Start a ztunnel and a node agent per node (default true).
    pub ztunnel: bool,
    /// Host port for the controller's admin endpoint (default 0: a free
    /// port, so parallel sandboxes never collide).
    pub admin_port: u16,
    /// Host port for the controller's xDS/CA endpoint (default 0: a free port).
    pub xds_port: u16,
    /// Extra arguments for every node's `ztunnel proxy` (`up --ztunnel-arg`).
    pub ztunnel_args: Vec<String>,
    /// Extra arguments for every waypoint (`up --waypoint-arg`).
    pub waypoint_args: Vec<String>,
    /// Node proxy programs replacing `ztunnel proxy` (`up --node-proxy
    /// [NODE=]PATH`).
    pub node_proxies: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 2,
            owner_pid: std::process::id(),
            ztunnel: true,
            admin_port: 0,
            xds_port: 0,
            ztunnel_args: Vec::new(),
            waypoint_args: Vec::new(),
            node_proxies: Vec::new(),
        }
    }
}

/// Where a sandbox's controller is, as `meshctl get controller -o json`
/// reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerInfo {
    /// Fabric address (reachable from nodes and pods).
    pub ip: Ipv4Addr,
    /// Host port forwarded to its admin endpoint.
    pub admin_port: u16,
    /// Host port forwarded to its xDS/CA endpoint.
    pub xds_port: u16,
    /// The CA's root certificate file.
    pub root_cert: PathBuf,
    /// Folder of per-node token files.
    pub tokens_dir: PathBuf,
}

impl ControllerInfo {
    fn parse(v: &serde_json::Value) -> Result<ControllerInfo> {
        let bad = |what: &str| Error::Parse(format!("get controller -o json: bad {what}: {v}"));
        let port = |k: &str| {
            v[k].as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| bad(k))
        };
        let path = |k: &str| v[k].as_str().map(PathBuf::from).ok_or_else(|| bad(k));
        Ok(ControllerInfo {
            ip: v["ip"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("ip"))?,
            admin_port: port("admin_port")?,
            xds_port: port("xds_port")?,
            root_cert: path("root_cert")?,
            tokens_dir: path("tokens_dir")?,
        })
    }
}

/// `meshctl` arguments naming a system component.
fn component_args(c: &Component) -> Vec<String> {
    match c {
        Component::Controller => vec!["controller".into()],
        Component::Ztunnel(n) => vec!["ztunnel".into(), "--node".into(), n.clone()],
        Component::NodeAgent(n) => vec!["node-agent".into(), "--node".into(), n.clone()],
        Component::Kubelet(n) => vec!["kubelet".into(), "--node".into(), n.clone()],
    }
}

/// A pod as `meshctl get pods -o json` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Node name.
    pub node: String,
    /// Pod IP (0.0.0.0 while it has none).
    pub ip: Ipv4Addr,
    /// Pending / Running / Failed.
    pub phase: String,
    /// Ready condition.
    pub ready: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Path of the `meshctl` binary built alongside the running test.
pub fn meshctl_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MESHCTL_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Tests run from target/<profile>/deps/<test>-<hash>.
    let exe =
        std::env::current_exe().map_err(|e| Error::Io("locating the test binary".into(), e))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = profile_dir.join("meshctl");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(Error::NoBinary(bin))
    }
}

/// A name no other sandbox of this machine uses at the same time.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(6)
        .collect();
    format!("e2e{tag}-{}-{n}", std::process::id())
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn check(args: &[String], out: Output) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            args: args.join(" "),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A running sandbox cluster.
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    bin: PathBuf,
    scratch: PathBuf,
    up: bool,
    controller: Option<ControllerInfo>,
}

/// How long [`Sandbox::http`] waits for an answer.
const DEFAULT_HTTP_TIMEOUT_MS: u64 = 5000;

impl Sandbox {
    /// Builds a 2-node sandbox from `manifests`: YAML text, or the path of a
    /// file or folder.
    pub fn up(manifests: &str) -> Result<Sandbox> {
        Sandbox::up_with(manifests, Options::default())
    }

    /// Builds a sandbox with options.
    pub fn up_with(manifests: &str, opts: Options) -> Result<Sandbox> {
        let name = unique_name("");
        let bin = meshctl_bin()?;
        let scratch = std::env::temp_dir().join(format!("meshctl-{name}"));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| Error::Io(format!("creating {}", scratch.display()), e))?;
        let mut sb = Sandbox {
            name,
            bin,
            scratch,
            up: false,
            controller: None,
        };
        let source = sb.manifest_path(manifests)?;
        sb.up = true; // from here on, drop tears down whatever was built
        let mut args = vec![
            "up".into(),
            source.display().to_string(),
            "--nodes".into(),
            opts.nodes.to_string(),
            "--owner-pid".into(),
            opts.owner_pid.to_string(),
            "--admin-port".into(),
            opts.admin_port.to_string(),
            "--xds-port".into(),
            opts.xds_port.to_string(),
        ];
        if !opts.ztunnel {
            args.push("--no-ztunnel".into());
        }
        // `=`: the values are ztunnel flags themselves.
        args.extend(
            opts.ztunnel_args
                .iter()
                .map(|a| format!("--ztunnel-arg={a}")),
        );
        args.extend(
            opts.waypoint_args
                .iter()
                .map(|a| format!("--waypoint-arg={a}")),
        );
        args.extend(
            opts.node_proxies
                .iter()
                .map(|p| format!("--node-proxy={p}")),
        );
        sb.run(&args)?;
        sb.controller = Some(sb.controller_info()?);
        Ok(sb)
    }

    /// A folder or file path is used as is; YAML text is written to a file.
    fn manifest_path(&self, manifests: &str) -> Result<PathBuf> {
        let as_path = Path::new(manifests.trim());
        if !manifests.contains('\n') && as_path.exists() {
            return Ok(as_path.to_path_buf());
        }
        let file = self.scratch.join("manifests.yaml");
        std::fs::write(&file, manifests)
            .map_err(|e| Error::Io(format!("writing {}", file.display()), e))?;
        Ok(file)
    }

    /// The sandbox's name (`--sandbox`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Prefix of all the sandbox's network namespaces.
    pub fn netns_prefix(&self) -> String {
        meshctl::sandbox::model::addresses::netns_prefix(&self.name)
    }

    /// The handle of the sandbox's network namespace `rest` (`fabric`,
    /// `node1`, `<namespace>.<pod>`), for `setns`.
    pub fn netns_path(&self, rest: &str) -> PathBuf {
        Path::new("/run/netns").join(format!("{}{rest}", self.netns_prefix()))
    }

    /// The sandbox's state folder.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(meshctl::sandbox::STATE_ROOT).join(&self.name)
    }

    /// A `meshctl` command aimed at this sandbox.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        // Every sandbox keeps its own default state folder, whatever the
        // developer's shell has set.
        cmd.env_remove("MESHCTL_STATE_DIR")
            .arg("--sandbox")
            .arg(&self.name);
        cmd
    }

    /// Starts `meshctl <args>` with its output piped, and returns it with the first line it
    /// writes to stderr once that line is out: verbs that watch (`stat`, `edges`, `tap`) say
    /// there when they have started watching.
    pub fn spawn_watching(&self, args: &[&str]) -> Result<(std::process::Child, String)> {
        let mut child = self
            .command()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Io(format!("running {}", self.bin.display()), e))?;
        let mut line = String::new();
        if let Some(stderr) = child.stderr.take() {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut line)
                .map_err(|e| Error::Io("reading meshctl's first line".into(), e))?;
        }
        Ok((child, line))
    }

    /// Runs `meshctl <args>`, failing unless it exits 0.
    pub fn run(&self, args: &[String]) -> Result<Output> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Io(format!("running {}", self.bin.display()), e))?;
        check(args, out)
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Result<Output> {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Io(format!("running {}", self.bin.display()), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| Error::Io("writing manifests".into(), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| Error::Io("waiting for meshctl".into(), e))?;
        check(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), out)
    }

    /// Runs a command in a pod (`name` or `namespace/name`); the output is
    /// returned whatever the exit status.
    pub fn exec(&self, pod: &str, cmd: &[&str]) -> Result<Output> {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        self.command()
            .args(["exec", name, "-n", ns, "--"])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Io(format!("running {}", self.bin.display()), e))
    }

    /// GETs `url` from inside `pod` with `meshctl app curl --fail`; the body.
    pub fn http(&self, pod: &str, url: &str) -> Result<String> {
        let out = self.try_http(pod, url, DEFAULT_HTTP_TIMEOUT_MS)?;
        let args = vec![format!("exec {pod} -- meshctl app curl --fail {url}")];
        check(&args, out).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// GETs `url` from inside `pod`, giving up after `timeout_ms`; the raw output, so a test
    /// can assert that a request fails (non-2xx or no answer) as well as that it succeeds.
    pub fn try_http(&self, pod: &str, url: &str, timeout_ms: u64) -> Result<Output> {
        let timeout = timeout_ms.to_string();
        let args = [
            "meshctl",
            "app",
            "curl",
            "--fail",
            "--timeout-ms",
            &timeout,
            url,
        ];
        self.exec(pod, &args)
    }

    /// Runs `meshctl app load --json ARGS` in `pod` (`name` or
    /// `namespace/name`); its report, or an error when it exits non-zero.
    pub fn load(&self, pod: &str, args: &[&str]) -> Result<LoadReport> {
        let mut argv = vec!["meshctl", "app", "load", "--json"];
        argv.extend_from_slice(args);
        let out = self.exec(pod, &argv)?;
        let out = check(&[format!("exec {pod} -- {}", argv.join(" "))], out)?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim())
            .map_err(|e| Error::Parse(format!("load report is not JSON ({e}): {text}")))
    }

    /// `meshctl label namespace NS key=value` (or `key-`).
    pub fn label(&self, namespace: &str, label: &str) -> Result<()> {
        self.run(&[
            "label".into(),
            "namespace".into(),
            namespace.into(),
            label.into(),
        ])
        .map(|_| ())
    }

    /// `meshctl apply -f -` with YAML text; returns meshctl's output.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.run_stdin(&["apply", "-f", "-"], yaml)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `meshctl apply -f -` with YAML text; meshctl's whole output (the findings it prints
    /// about the applied objects are on stderr).
    pub fn apply_output(&self, yaml: &str) -> Result<Output> {
        self.run_stdin(&["apply", "-f", "-"], yaml)
    }

    /// `meshctl delete -f -` with YAML text.
    pub fn delete(&self, yaml: &str) -> Result<String> {
        self.run_stdin(&["delete", "-f", "-"], yaml)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Every pod of the sandbox.
    pub fn pods(&self) -> Result<Vec<PodInfo>> {
        let out = self.run(&[
            "get".into(),
            "pods".into(),
            "-A".into(),
            "-o".into(),
            "json".into(),
        ])?;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Parse(format!("get pods -o json: {e}")))?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .map(|p| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                let ip = s(&p["status"]["podIP"]);
                Ok(PodInfo {
                    name: s(&p["metadata"]["name"]),
                    namespace: s(&p["metadata"]["namespace"]),
                    node: s(&p["spec"]["nodeName"]),
                    // A pod whose network was never set up (its CNI ADD failed) has none.
                    ip: match ip.as_str() {
                        "" => Ipv4Addr::UNSPECIFIED,
                        ip => ip
                            .parse()
                            .map_err(|_| Error::Parse(format!("bad pod IP {ip:?}")))?,
                    },
                    phase: s(&p["status"]["phase"]),
                    ready: p["status"]["conditions"][0]["status"] == "True",
                    labels: serde_json::from_value(p["metadata"]["labels"].clone())
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// A pod by name (any namespace).
    pub fn pod(&self, name: &str) -> Result<PodInfo> {
        self.pods()?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Parse(format!("no pod named {name}")))
    }

    /// A pod's IP.
    pub fn pod_ip(&self, name: &str) -> Result<Ipv4Addr> {
        self.pod(name).map(|p| p.ip)
    }

    /// `meshctl get controller -o json`: the control plane and its processes.
    fn controller_json(&self) -> Result<serde_json::Value> {
        let out = self.run(&args(&["get", "controller", "-o", "json"]))?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Parse(format!("get controller -o json: {e}")))
    }

    /// Reads where the controller is (`meshctl get controller -o json`).
    pub fn controller_info(&self) -> Result<ControllerInfo> {
        ControllerInfo::parse(&self.controller_json()?)
    }

    fn controller(&self) -> &ControllerInfo {
        // Set by `up_with` before any Sandbox is handed out.
        self.controller
            .as_ref()
            .unwrap_or_else(|| unreachable!("sandbox {} has no controller record", self.name))
    }

    /// `http://127.0.0.1:<port>`: the controller's admin endpoint from the host.
    pub fn controller_admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.controller().admin_port)
    }

    /// The controller's xDS/CA endpoint (gRPC over TLS) from the host.
    pub fn controller_xds_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.controller().xds_port))
    }

    /// The controller's address on the sandbox fabric (from nodes and pods).
    pub fn controller_ip(&self) -> Ipv4Addr {
        self.controller().ip
    }

    /// The PID of a running system component, as `meshctl get controller
    /// -o json` reports it; `None` when it is not running.
    pub fn component_pid(&self, component: &Component) -> Result<Option<i32>> {
        let v = self.controller_json()?;
        let components = v["components"].as_array().cloned().unwrap_or_default();
        let entry = components.iter().find(|c| {
            serde_json::from_value::<Component>(c["component"].clone())
                .ok()
                .as_ref()
                == Some(component)
        });
        Ok(entry
            .and_then(|c| c["pid"].as_i64())
            .and_then(|p| i32::try_from(p).ok()))
    }

    /// The bearer token provisioned for `node`'s ztunnel.
    pub fn node_token(&self, node: &str) -> Result<String> {
        let path = self.controller().tokens_dir.join(node);
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| Error::Io(format!("reading {}", path.display()), e))
    }

    /// The mesh's root certificate (PEM).
    pub fn root_cert_pem(&self) -> Result<String> {
        let path = &self.controller().root_cert;
        std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("reading {}", path.display()), e))
    }

    /// `meshctl restart <component>`: stops it (if running) and starts it
    /// with the same arguments; the controller is ready when this returns.
    pub fn restart(&self, component: &Component) -> Result<()> {
        self.component_verb("restart", component)
    }

    /// `meshctl stop <component>`.
    pub fn stop(&self, component: &Component) -> Result<()> {
        self.component_verb("stop", component)
    }

    /// `meshctl start <component>`.
    pub fn start(&self, component: &Component) -> Result<()> {
        self.component_verb("start", component)
    }

    fn component_verb(&self, verb: &str, component: &Component) -> Result<()> {
        let mut a = vec![verb.to_string()];
        a.extend(component_args(component));
        self.run(&a).map(|_| ())
    }

    /// The controller's `/debug/config_dump` (`meshctl config dump`).
    pub fn config_dump(&self) -> Result<serde_json::Value> {
        let out = self.run(&args(&["config", "dump"]))?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::Parse(format!("config dump is not JSON: {e}")))
    }

    /// A system component's log (`meshctl logs controller` and friends; a
    /// pod of the same name in the default namespace would win).
    pub fn logs(&self, component: &Component) -> Result<String> {
        let mut a = vec!["logs".to_string()];
        a.extend(component_args(component));
        self.run(&a)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Tears the sandbox down now (drop does it too).
    pub fn down(&mut self) -> Result<()> {
        if !self.up {
            return Ok(());
        }
        self.up = false;
        self.run(&["down".into()]).map(|_| ())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("tearing down sandbox {}: {e}", self.name);
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
