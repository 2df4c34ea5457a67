//! The sandbox's kubelet prober: `meshctl sandbox-kubelet --node N` (hidden), one per node,
//! started with the node's system components inside the node's network namespace, so its
//! probes leave from the node exactly as kubelet's do (and meet the node's probe SNAT rule
//! when the node agent keeps one).
//!
//! It reads `state.json` without the lock (a slightly old view is fine), runs every
//! `httpGet` / `tcpSocket` readiness and liveness probe of the running pods on its node on
//! their own schedule, and writes what they say to `<state>/probes/<node>.json` (atomically,
//! only on change), which verbs read when they refresh pod status. A container whose liveness
//! probe fails is restarted, as kubelet does, through the caller's `restart` (which takes the
//! sandbox's lock, on a thread of its own so probing goes on meanwhile); while it keeps failing
//! it is restarted again after a backoff of 10 s doubling up to 5 minutes. It exits when the
//! sandbox's state file is gone.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::state;
use crate::sandbox::error::{Result, SandboxError};
use crate::sandbox::model::cluster::{Cluster, Phase};
use crate::sandbox::model::objects::Container;
use crate::sandbox::model::probes::{
    Action, Plan, PodProbes, ProbeKind, ProbeReport, Tracker, container_probes, http_status_passes,
};

/// How often the prober wakes to run what is due and re-read the state.
const TICK: Duration = Duration::from_millis(200);
/// The longest wait between readiness probes of a container that has not been ready yet:
/// kubelet would wait a whole period (10 s by default); the sandbox lets pods (waypoints
/// among them) come up as soon as they serve.
const UNTIL_FIRST_READY: Duration = Duration::from_secs(1);
/// The wait after a liveness restart before the next one, doubled per restart.
const RESTART_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait between liveness restarts (kubelet's cap).
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(300);

/// Restarts a container: pod key, pod uid, container name.
pub type Restart = std::sync::Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// The most of a probe's response read (kubelet reads 10 KiB of the body; the status line
/// is all that counts).
const MAX_RESPONSE: usize = 10 * 1024;

/// The report file of `node`.
pub fn report_file(state_dir: &Path, node: &str) -> PathBuf {
    state_dir.join("probes").join(format!("{node}.json"))
}

/// Every node's report, merged (a missing or unreadable file reports nothing).
pub fn read_reports(state_dir: &Path, nodes: &[String]) -> ProbeReport {
    let mut all = ProbeReport::new();
    for node in nodes {
        let Ok(text) = std::fs::read_to_string(report_file(state_dir, node)) else {
            continue;
        };
        if let Ok(report) = serde_json::from_str::<ProbeReport>(&text) {
            all.extend(report);
        }
    }
    all
}

/// One probe of one container of one pod, with its schedule.
struct Scheduled {
    pod_key: String,
    uid: String,
    container: String,
    kind: ProbeKind,
    plan: Plan,
    tracker: Tracker,
    next: Instant,
    /// Whether it has ever passed (readiness probes run faster until then).
    ever_passed: bool,
    /// Liveness restarts made, and when the next may be.
    restarts: u32,
    restart_after: Instant,
}

/// Probe identity: pod uid, container name, kind.
type ProbeId = (String, String, ProbeKind);

/// The probes `cluster` asks of `node`'s running pods.
fn wanted(cluster: &Cluster, node: &str) -> Vec<(ProbeId, String, Plan)> {
    let mut out = Vec::new();
    for pod in cluster.pods.values() {
        if pod.node != node || pod.phase != Phase::Running {
            continue;
        }
        let containers = pod.spec["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for value in &containers {
            let Ok(container) = serde_json::from_value::<Container>(value.clone()) else {
                continue;
            };
            for (kind, probe) in container_probes(value) {
                if let Some(plan) = probe.plan(&container, pod.ip) {
                    let id = (pod.uid.clone(), container.name.clone(), kind);
                    out.push((id, pod.key(), plan));
                }
            }
        }
    }
    out
}

/// Runs one probe: `Err` says why it failed.
pub fn run_probe(action: &Action, timeout: Duration) -> std::result::Result<(), String> {
    match action {
        Action::Tcp(addr) => TcpStream::connect_timeout(addr, timeout)
            .map(drop)
            .map_err(|e| format!("dial tcp {addr}: {e}")),
        Action::Http {
            addr,
            path,
            headers,
        } => {
            let status = http_get(*addr, path, headers, timeout)
                .map_err(|e| format!("Get \"http://{addr}{path}\": {e}"))?;
            if http_status_passes(status) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {status}"))
            }
        }
    }
}

/// GETs `path` from `addr` as kubelet does (its User-Agent, `Accept: */*`); the status code.
fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while !raw.windows(2).any(|w| w == b"\r\n") && raw.len() < MAX_RESPONSE {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&raw);
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok());
    status.ok_or_else(|| {
        let why = if raw.is_empty() {
            "connection closed before a response".to_string()
        } else {
            "malformed HTTP response".to_string()
        };
        std::io::Error::other(why)
    })
}

/// The report of `probes`, per pod.
fn report(probes: &BTreeMap<ProbeId, Scheduled>) -> ProbeReport {
    let mut out = ProbeReport::new();
    for s in probes.values() {
        let entry = out.entry(s.pod_key.clone()).or_insert_with(|| PodProbes {
            uid: s.uid.clone(),
            ready: None,
            live: true,
            liveness_failures: 0,
            message: String::new(),
        });
        match s.kind {
            ProbeKind::Readiness => {
                entry.ready = Some(entry.ready.unwrap_or(true) && s.tracker.passing);
            }
            ProbeKind::Liveness => {
                entry.live &= s.tracker.passing;
                entry.liveness_failures += s.tracker.failures;
            }
        }
        if !s.tracker.passing && entry.message.is_empty() {
            let kind = match s.kind {
                ProbeKind::Readiness => "Readiness",
                ProbeKind::Liveness => "Liveness",
            };
            entry.message = format!("{kind} probe failed: {}", s.tracker.last_error);
        }
    }
    out
}

fn write_report(path: &Path, report: &ProbeReport) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(SandboxError::io(format!("creating {}", dir.display())))?;
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| SandboxError::Invalid(format!("probe report: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(SandboxError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(SandboxError::io(format!("writing {}", path.display())))
}

/// Runs the prober of `node` until the sandbox's state file disappears; `restart` restarts a
/// container whose liveness probe fails.
pub fn run(state_dir: &Path, node: &str, restart: Restart) -> Result<()> {
    let out = report_file(state_dir, node);
    let mut probes: BTreeMap<ProbeId, Scheduled> = BTreeMap::new();
    let mut written: Option<ProbeReport> = None;
    eprintln!("probing the pods of {node}");
    loop {
        if !state::state_file(state_dir).exists() {
            eprintln!("the sandbox is gone; stopping");
            return Ok(());
        }
        if let Some(cluster) = state::peek(state_dir) {
            let now = Instant::now();
            let want = wanted(&cluster, node);
            let keep: std::collections::BTreeSet<&ProbeId> =
                want.iter().map(|(id, _, _)| id).collect();
            probes.retain(|id, _| keep.contains(id));
            for (id, pod_key, plan) in want {
                let s = probes.entry(id.clone()).or_insert_with(|| Scheduled {
                    pod_key,
                    uid: id.0.clone(),
                    container: id.1.clone(),
                    restarts: 0,
                    restart_after: now,
                    kind: id.2,
                    tracker: Tracker::new(id.2),
                    next: now + plan.initial_delay,
                    ever_passed: false,
                    plan: plan.clone(),
                });
                if s.plan != plan {
                    s.plan = plan;
                }
            }
        }
        run_due(&mut probes, node, &restart);
        let current = report(&probes);
        if written.as_ref() != Some(&current) {
            if let Err(e) = write_report(&out, &current) {
                eprintln!("{e}");
            } else {
                written = Some(current);
            }
        }
        std::thread::sleep(TICK);
    }
}

/// Runs every probe that is due, at once (each bounded by its timeout), and records them.
fn run_due(probes: &mut BTreeMap<ProbeId, Scheduled>, node: &str, restart: &Restart) {
    let now = Instant::now();
    let due: Vec<&mut Scheduled> = probes.values_mut().filter(|s| s.next <= now).collect();
    if due.is_empty() {
        return;
    }
    std::thread::scope(|scope| {
        let runs: Vec<_> = due
            .into_iter()
            .map(|s| {
                let (action, timeout) = (s.plan.action.clone(), s.plan.timeout);
                (s, scope.spawn(move || run_probe(&action, timeout)))
            })
            .collect();
        for (s, run) in runs {
            let outcome = run
                .join()
                .unwrap_or_else(|_| Err("the probe panicked".to_string()));
            if s.tracker.record(outcome, &s.plan) {
                let state = if s.tracker.passing {
                    "passing"
                } else {
                    "failing"
                };
                eprintln!(
                    "{node}: {} {:?} probe of {} now {state} {}",
                    s.pod_key, s.kind, s.uid, s.tracker.last_error
                );
            }
            if s.kind == ProbeKind::Liveness
                && !s.tracker.passing
                && Instant::now() >= s.restart_after
            {
                let (key, uid, container) = (s.pod_key.clone(), s.uid.clone(), s.container.clone());
                let restart = restart.clone();
                std::thread::spawn(move || restart(&key, &uid, &container));
                let backoff = RESTART_BACKOFF
                    .saturating_mul(1u32 << s.restarts.min(8))
                    .min(MAX_RESTART_BACKOFF);
                s.restarts = s.restarts.saturating_add(1);
                s.restart_after = Instant::now() + backoff;
            }
            s.ever_passed |= s.tracker.passing;
            let wait = if s.kind == ProbeKind::Readiness && !s.ever_passed {
                s.plan.period.min(UNTIL_FIRST_READY)
            } else {
                s.plan.period
            };
            s.next = Instant::now() + wait;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot HTTP server on loopback answering `status`.
    fn serve_once(status: &'static str) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut conn, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        addr
    }

    #[test]
    fn http_probes_pass_on_2xx_3xx_and_fail_otherwise() {
        let timeout = Duration::from_secs(5);
        let http = |addr| Action::Http {
            addr,
            path: "/healthz?x=1".into(),
            headers: vec![("X-Probe".into(), "yes".into())],
        };
        assert_eq!(run_probe(&http(serve_once("200 OK")), timeout), Ok(()));
        assert_eq!(run_probe(&http(serve_once("302 Found")), timeout), Ok(()));
        let failed =
            run_probe(&http(serve_once("500 Internal Server Error")), timeout).unwrap_err();
        assert!(failed.contains("statuscode: 500"), "{failed}");

        // A server that closes without answering (what a proxy refusing plaintext does).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = std::thread::spawn(move || drop(listener.accept()));
        let failed = run_probe(&http(addr), timeout).unwrap_err();
        closer.join().unwrap();
        assert!(
            failed.contains("closed before a response") || failed.contains("reset"),
            "{failed}"
        );
    }

    #[test]
    fn tcp_probes_pass_when_a_listener_accepts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(
            run_probe(&Action::Tcp(addr), Duration::from_secs(5)),
            Ok(())
        );
        drop(listener);
        assert!(run_probe(&Action::Tcp(addr), Duration::from_secs(5)).is_err());
    }

    #[test]
    fn reports_combine_a_pods_probes() {
        let plan = Plan {
            action: Action::Tcp("127.0.0.1:1".parse().unwrap()),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
        };
        let mut probes = BTreeMap::new();
        for (container, kind, ok) in [
            ("a", ProbeKind::Readiness, true),
            ("b", ProbeKind::Readiness, false),
            ("a", ProbeKind::Liveness, false),
        ] {
            let mut tracker = Tracker::new(kind);
            tracker.record(if ok { Ok(()) } else { Err("refused".into()) }, &plan);
            probes.insert(
                ("u1".to_string(), container.to_string(), kind),
                Scheduled {
                    pod_key: "ns/p".into(),
                    uid: "u1".into(),
                    container: container.into(),
                    restarts: 0,
                    restart_after: Instant::now(),
                    kind,
                    plan: plan.clone(),
                    tracker,
                    next: Instant::now(),
                    ever_passed: false,
                },
            );
        }
        let r = report(&probes);
        let p = &r["ns/p"];
        assert_eq!(
            p.ready,
            Some(false),
            "one failing readiness probe: not ready"
        );
        assert!(!p.live);
        assert_eq!(p.liveness_failures, 1);
        assert!(p.message.contains("refused"), "{}", p.message);
    }
}
