//! Helpers for tests and benchmarks of the node proxies on the sandbox: their admin endpoints
//! (reached inside each node's network namespace), which pods they capture, their processes,
//! and the processes of pods.

// Shared by the tests and the benchmark, each of which uses a part.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{Component, Sandbox, meshctl_bin};
use meshctl::sandbox::{model::Cluster, state};
use serde_json::Value;

/// The sandbox's nodes (two by default).
pub const NODES: [&str; 2] = ["node1", "node2"];
/// ztunnel's localhost admin port (`/config_dump`).
const ADMIN_PORT: u16 = 15000;
/// ztunnel's readiness port (`/healthz/ready`).
const READY_PORT: u16 = 15021;
/// How long the mesh gets to reach a state a test waits for. Generous: a loaded machine
/// runs several sandboxes at once. Never asserted as a duration.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Parses JSON or fails the test with the text.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

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

/// A name no other request of this process uses, to find in a packet capture.
pub fn marker(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "m{tag}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

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

/// `node`'s ztunnel `/config_dump`, or Null while it does not answer.
pub fn ztunnel_dump(sb: &Sandbox, node: &str) -> Value {
    ztunnel_get(sb, node, ADMIN_PORT, "/config_dump")
        .map(|t| json(&t))
        .unwrap_or(Value::Null)
}

/// `namespace/name` of the pods `node`'s ztunnel serves, from its dump.
pub fn captured(sb: &Sandbox, node: &str) -> BTreeSet<String> {
    let dump = ztunnel_dump(sb, node);
    let pods = dump["extra"]["workloadState"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    pods.values()
        .filter(|p| p["state"] == "Up")
        .map(|p| {
            format!(
                "{}/{}",
                p["info"]["namespace"].as_str().unwrap_or_default(),
                p["info"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Live connections of pod `namespace/name` in `node`'s ztunnel (0 when not served).
pub fn active_connections(sb: &Sandbox, node: &str, pod: &str) -> u64 {
    let dump = ztunnel_dump(sb, node);
    let pods = dump["extra"]["workloadState"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    pods.values()
        .filter(|p| {
            format!(
                "{}/{}",
                p["info"]["namespace"].as_str().unwrap_or_default(),
                p["info"]["name"].as_str().unwrap_or_default()
            ) == pod
        })
        .filter_map(|p| p["activeConnections"].as_u64())
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
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
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

fn cluster(sb: &Sandbox) -> Cluster {
    state::peek(&sb.state_dir()).expect("readable sandbox state")
}

/// Container PIDs of every pod, by `namespace/name`.
pub fn pod_pids(sb: &Sandbox) -> BTreeMap<String, Vec<i32>> {
    cluster(sb)
        .pods
        .iter()
        .map(|(key, pod)| {
            let pids = pod
                .containers
                .iter()
                .filter_map(|c| c.process.map(|p| p.pid))
                .collect();
            (key.clone(), pids)
        })
        .collect()
}

/// PID of `node`'s running ztunnel.
pub fn ztunnel_pid(sb: &Sandbox, node: &str) -> Option<i32> {
    let cluster = cluster(sb);
    let control = cluster.control?;
    control
        .processes
        .iter()
        .find(|p| p.component == Component::Ztunnel(node.into()))
        .and_then(|p| p.process)
        .map(|p| p.pid)
}

/// Whether process `pid` is gone (or a zombie waiting to be reaped).
pub fn process_exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Adds `args` to every ztunnel's recorded command line and restarts them with it.
pub fn restart_ztunnels_with(sb: &Sandbox, args: &[&str]) {
    {
        let dir = sb.state_dir();
        let _lock = state::lock(&dir, sb.name(), false).expect("sandbox lock");
        let mut cluster = state::load(&dir, sb.name()).expect("sandbox state");
        let control = cluster.control.as_mut().expect("sandbox runs a mesh");
        for p in control.processes.iter_mut() {
            if matches!(p.component, Component::Ztunnel(_)) {
                p.argv.extend(args.iter().map(|a| a.to_string()));
            }
        }
        state::save(&dir, &cluster).expect("saving sandbox state");
    }
    for node in NODES {
        sb.restart(&Component::Ztunnel(node.into()))
            .expect("restarting ztunnel");
    }
}

/// CPU time (user + system) and resident memory of a process, from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct ProcUsage {
    /// CPU seconds used since the process started.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `pid`'s CPU time and RSS.
pub fn proc_usage(pid: i32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_seconds = (ticks(11)? + ticks(12)?) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcUsage {
        cpu_seconds,
        rss_bytes: rss_kib * 1024,
    })
}
