//! Running the node's chained CNI plugin (`ztunnel-cni`, installed with the mesh's node
//! agent) for a pod, as a container runtime does: the spec's `CNI_*` environment and the
//! network configuration on stdin, with the main plugin's result (`prevResult`: the pod's
//! `eth0` and IP, which [`super::netns::create_pods`] set up) for `ADD`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::netns::NETNS_RUN_DIR;
use crate::sandbox::model::cluster::{Node, Pod};

/// The spec version the sandbox's network configuration declares.
const CNI_VERSION: &str = "1.1.0";

/// The plugin's binary name (its `type`).
pub const PLUGIN: &str = "ztunnel-cni";

/// Longest a single plugin run may take (it waits for the agent, which waits for the
/// controller to list the pod) before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The plugin of one node: where it is and which agent it asks.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The binary.
    pub binary: PathBuf,
    /// The node agent's CNI socket.
    pub agent_socket: PathBuf,
}

/// The main plugin's result for `pod`: its `eth0` in its namespace, its /32 and the route
/// through the node.
fn prev_result(pod: &Pod, node: &Node) -> Value {
    let gateway = node.gateway().to_string();
    json!({
        "cniVersion": CNI_VERSION,
        "interfaces": [{"name": "eth0", "sandbox": netns_path(pod).display().to_string()}],
        "ips": [{"address": format!("{}/32", pod.ip), "gateway": gateway, "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gateway}],
    })
}

fn netns_path(pod: &Pod) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(&pod.netns)
}

impl Plugin {
    /// `ADD` for `pod` on `node`: `Ok` once the plugin succeeded (the pod is captured if
    /// it is in the mesh), else the plugin's error message.
    pub fn add(&self, pod: &Pod, node: &Node) -> Result<(), String> {
        self.run("ADD", pod, Some(prev_result(pod, node)))
    }

    /// `DEL` for `pod` (the plugin never fails it for an absent agent).
    pub fn del(&self, pod: &Pod) -> Result<(), String> {
        self.run("DEL", pod, None)
    }

    fn run(&self, command: &str, pod: &Pod, prev: Option<Value>) -> Result<(), String> {
        let mut config = json!({
            "cniVersion": CNI_VERSION,
            "name": "sandbox",
            "type": PLUGIN,
            "agent_socket": self.agent_socket.display().to_string(),
            "exclude_namespaces": [],
        });
        if let Some(prev) = prev {
            config["prevResult"] = prev;
        }
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            pod.namespace, pod.name, pod.uid, pod.uid
        );
        let bin_dir = self.binary.parent().unwrap_or(Path::new("/"));
        let mut child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &pod.uid)
            .env("CNI_NETNS", netns_path(pod))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", args)
            .env("CNI_PATH", bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin that exits without reading says why on stdout.
            let _ = stdin.write_all(config.to_string().as_bytes());
        }
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{PLUGIN} {command} did not finish in {RUN_LIMIT:?}"
                    ));
                }
            }
        };
        let mut out = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = stdout.take(64 * 1024).read_to_string(&mut out);
        }
        if status.success() {
            return Ok(());
        }
        // The spec's error object: {code, msg, details}.
        let error: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let text = |k: &str| {
            error
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match (error.get("code").and_then(Value::as_u64), text("msg")) {
            (Some(code), msg) => Err(format!("{msg} (code {code}): {}", text("details"))),
            (None, _) => Err(format!("{PLUGIN} {command}: {status}: {}", out.trim())),
        }
    }
}
