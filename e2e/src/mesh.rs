//! The node proxies of a sandbox, as tests and benchmarks observe them: their admin endpoints
//! (reached inside each node's network namespace), which pods they capture, their processes,
//! and the processes of pods.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{Component, SETTLE, Sandbox, eventually, json, meshctl_bin};

/// The sandbox's nodes (two by default).
pub const NODES: [&str; 2] = ["node1", "node2"];
/// ztunnel's localhost admin port (`/config_dump`).
const ADMIN_PORT: u16 = 15000;
/// ztunnel's readiness port (`/healthz/ready`).
const READY_PORT: u16 = 15021;
/// ztunnel's metrics port (`/metrics`).
const METRICS_PORT: u16 = 15020;

/// Runs `args` inside `node`'s network namespace.
pub fn node_exec(sb: &Sandbox, node: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &format!("{}{node}", sb.netns_prefix())])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec: {e}"))
}

/// GETs `path` from one of `node`'s ztunnel endpoints; the body on a 2xx answer.
fn ztunnel_get(sb: &Sandbox, node: &str, port: u16, path: &str) -> Option<String> {
    let bin = meshctl_bin().expect("meshctl binary");
    let url = format!("http://127.0.0.1:{port}{path}");
    let out = node_exec(
        sb,
        node,
        &[
            &bin.display().to_string(),
            "app",
            "curl",
            "--fail",
            "--timeout-ms",
            "3000",
            &url,
        ],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `node`'s ztunnel reports ready.
pub fn ztunnel_ready(sb: &Sandbox, node: &str) -> bool {
    ztunnel_get(sb, node, READY_PORT, "/healthz/ready").is_some()
}

/// `node`'s ztunnel `/metrics` text, or `None` while it does not answer.
pub fn ztunnel_metrics(sb: &Sandbox, node: &str) -> Option<String> {
    ztunnel_get(sb, node, METRICS_PORT, "/metrics")
}

/// Runs `f` on a thread that has entered the network namespace at `netns` (see
/// [`Sandbox::netns_path`]): sockets it creates belong to that namespace, and keep working
/// from any thread afterwards.
pub fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let handle = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns on this thread only, which ends right after `f`.
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `node`'s ztunnel `/config_dump`, or Null while it does not answer.
pub fn ztunnel_dump(sb: &Sandbox, node: &str) -> Value {
    ztunnel_get(sb, node, ADMIN_PORT, "/config_dump")
        .map(|t| json(&t))
        .unwrap_or(Value::Null)
}

/// The pods `node`'s ztunnel serves, from its dump: `namespace/name` and the pod's state.
/// Istio's ztunnel has `workloadState` at the top of its dump, the mesh's own under `extra`;
/// the entries are alike.
fn served_pods(sb: &Sandbox, node: &str) -> Vec<(String, Value)> {
    let dump = ztunnel_dump(sb, node);
    let pods = dump["extra"]["workloadState"]
        .as_object()
        .or_else(|| dump["workloadState"].as_object())
        .cloned()
        .unwrap_or_default();
    pods.into_iter()
        .map(|(_, p)| {
            let key = format!(
                "{}/{}",
                p["info"]["namespace"].as_str().unwrap_or_default(),
                p["info"]["name"].as_str().unwrap_or_default()
            );
            (key, p)
        })
        .collect()
}

/// `namespace/name` of the pods `node`'s ztunnel serves, from its dump.
pub fn captured(sb: &Sandbox, node: &str) -> BTreeSet<String> {
    served_pods(sb, node)
        .into_iter()
        .filter(|(_, p)| p["state"] == "Up")
        .map(|(key, _)| key)
        .collect()
}

/// Live connections of pod `namespace/name` in `node`'s ztunnel (0 when not served).
pub fn active_connections(sb: &Sandbox, node: &str, pod: &str) -> u64 {
    served_pods(sb, node)
        .into_iter()
        .filter(|(key, _)| key == pod)
        .filter_map(|(_, p)| p["activeConnections"].as_u64())
        .sum()
}

/// Serial numbers of the certificates `node`'s ztunnel holds, by identity.
pub fn certificate_serials(sb: &Sandbox, node: &str) -> BTreeMap<String, String> {
    let dump = ztunnel_dump(sb, node);
    dump["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| {
            Some((
                c["identity"].as_str()?.to_string(),
                c["certificate"]["serial_number"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Fails the test with the component's log.
fn fail_with_log(sb: &Sandbox, component: &Component, why: &str) -> ! {
    let log = sb.logs(component).unwrap_or_else(|e| e.to_string());
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    panic!(
        "{why}\n--- {} log (last lines)\n{}",
        component.name(),
        tail.join("\n")
    );
}

/// Waits until every node's ztunnel reports ready.
pub fn wait_ready(sb: &Sandbox) {
    for node in NODES {
        if !eventually(SETTLE, || ztunnel_ready(sb, node)) {
            fail_with_log(
                sb,
                &Component::Ztunnel(node.into()),
                &format!("ztunnel on {node} never became ready"),
            );
        }
    }
}

/// Waits until `node`'s ztunnel serves exactly `pods` (`namespace/name`) and is ready.
pub fn wait_captured(sb: &Sandbox, node: &str, pods: &[&str]) {
    let want: BTreeSet<String> = pods.iter().map(|p| p.to_string()).collect();
    let mut last = BTreeSet::new();
    let done = eventually(SETTLE, || {
        last = captured(sb, node);
        last == want && ztunnel_ready(sb, node)
    });
    if !done {
        fail_with_log(
            sb,
            &Component::Ztunnel(node.into()),
            &format!("ztunnel on {node} serves {last:?}, expected {want:?}"),
        );
    }
}

/// Waits until every node's ztunnel serves exactly the pods of `namespace` placed on it.
pub fn wait_namespace_captured(sb: &Sandbox, namespace: &str) {
    let pods = sb.pods().expect("meshctl get pods");
    for node in NODES {
        let here: Vec<String> = pods
            .iter()
            .filter(|p| p.namespace == namespace && p.node == node)
            .map(|p| format!("{namespace}/{}", p.name))
            .collect();
        wait_captured(
            sb,
            node,
            &here.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
}

/// PIDs of the commands every pod's containers run, by `namespace/name`, from the sandbox's
/// state file (which no verb prints): what to measure, below the process that confines each.
pub fn pod_pids(sb: &Sandbox) -> BTreeMap<String, Vec<i32>> {
    let cluster =
        meshctl::sandbox::host::state::peek(&sb.state_dir()).expect("readable sandbox state");
    cluster
        .pods
        .iter()
        .map(|(key, pod)| {
            let pids = pod
                .containers
                .iter()
                .filter_map(|c| c.process.map(|p| p.pid))
                .map(|pid| meshctl::sandbox::command_pid(pid).unwrap_or(pid))
                .collect();
            (key.clone(), pids)
        })
        .collect()
}

/// PID of `node`'s running ztunnel.
pub fn ztunnel_pid(sb: &Sandbox, node: &str) -> Option<i32> {
    sb.component_pid(&Component::Ztunnel(node.into()))
        .expect("meshctl get controller")
}

/// GETs `url` from pod `client` (`namespace/name`) with a 5 s timeout: the echo server's JSON
/// reply, or the failure as text.
pub fn get_json(sb: &Sandbox, client: &str, url: &str) -> Result<Value, String> {
    let out = sb.try_http(client, url, 5000).map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(json(&String::from_utf8_lossy(&out.stdout)))
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A string no other call in this process returns, to find in a packet capture.
pub fn marker(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "m{tag}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
