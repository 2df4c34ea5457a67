//! Container health probes as Kubernetes declares them (`readinessProbe`, `livenessProbe`)
//! and kubelet's bookkeeping of their results, as data: what to run (an HTTP GET or a TCP
//! connect at the pod's IP), when, and what a run of results means. Running them is
//! `host::prober`'s.
//!
//! Field names and defaults are Kubernetes': `periodSeconds` 10, `timeoutSeconds` 1,
//! `successThreshold` 1, `failureThreshold` 3, `initialDelaySeconds` 0, `httpGet.path` `/`,
//! `scheme` HTTP; an HTTP status from 200 to 399 is a success. `exec` and `grpc` probes (and
//! `startupProbe`) are not run, and `apply` says so (`ignored.rs`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::objects::{Container, IntOrString};

/// `readinessProbe` / `livenessProbe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// An HTTP GET against the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// A TCP connect to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// A command in the container: not run by the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<serde_json::Value>,
    /// A gRPC health check: not run by the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<serde_json::Value>,
    /// Seconds after the container starts before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u32>,
    /// Seconds between probes (default 10, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u32>,
    /// Seconds one probe may take (default 1, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
    /// Consecutive successes that make a failed probe pass (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// Consecutive failures that make a passing probe fail (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

/// `httpGet`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    /// Path (and query); `/` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A port number or a container port's name.
    pub port: IntOrString,
    /// Another host than the pod's IP: not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (default) or `HTTPS` (not run by the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// `httpGet.httpHeaders[]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// `tcpSocket`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TcpSocketAction {
    /// A port number or a container port's name.
    pub port: IntOrString,
    /// Another host than the pod's IP: not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Readiness: the pod serves (READY, Service endpoints).
    Readiness,
    /// Liveness: the container is healthy.
    Liveness,
}

/// What one probe run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// GET `path` at `addr` with `headers`.
    Http {
        /// Pod IP and port.
        addr: SocketAddr,
        /// Path and query.
        path: String,
        /// Extra headers (name, value).
        headers: Vec<(String, String)>,
    },
    /// Connect to `addr`.
    Tcp(SocketAddr),
}

/// A probe ready to run: its action and timing, Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to run.
    pub action: Action,
    /// Before the first run.
    pub initial_delay: Duration,
    /// Between runs.
    pub period: Duration,
    /// Of one run.
    pub timeout: Duration,
    /// Successes to pass.
    pub success_threshold: u32,
    /// Failures to fail.
    pub failure_threshold: u32,
}

/// Resolves `port` (a number, or a name among `container`'s ports).
fn port_of(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::Str(name) => container
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

impl Probe {
    /// The plan for this probe of `container` in a pod at `ip`; `None` for a kind the sandbox
    /// does not run (exec, grpc, HTTPS) or a port name the container does not declare.
    pub fn plan(&self, container: &Container, ip: Ipv4Addr) -> Option<Plan> {
        let action = if let Some(http) = &self.http_get {
            if http.scheme.as_deref().is_some_and(|s| s != "HTTP") {
                return None;
            }
            let port = port_of(&http.port, container)?;
            let path = match http.path.as_deref() {
                Some(p) if p.starts_with('/') => p.to_string(),
                Some(p) => format!("/{p}"),
                None => "/".to_string(),
            };
            Action::Http {
                addr: SocketAddr::from((ip, port)),
                path,
                headers: http
                    .http_headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone()))
                    .collect(),
            }
        } else if let Some(tcp) = &self.tcp_socket {
            Action::Tcp(SocketAddr::from((ip, port_of(&tcp.port, container)?)))
        } else {
            return None;
        };
        let secs = |v: Option<u32>, default: u32| {
            Duration::from_secs(u64::from(v.unwrap_or(default).max(1)))
        };
        Some(Plan {
            action,
            initial_delay: Duration::from_secs(u64::from(self.initial_delay_seconds.unwrap_or(0))),
            period: secs(self.period_seconds, 10),
            timeout: secs(self.timeout_seconds, 1),
            success_threshold: self.success_threshold.unwrap_or(1).max(1),
            failure_threshold: self.failure_threshold.unwrap_or(3).max(1),
        })
    }
}

/// The probes of a container, as the sandbox reads them from its spec.
pub fn container_probes(value: &serde_json::Value) -> Vec<(ProbeKind, Probe)> {
    let mut found = Vec::new();
    for (kind, field) in [
        (ProbeKind::Readiness, "readinessProbe"),
        (ProbeKind::Liveness, "livenessProbe"),
    ] {
        if let Some(probe) = value
            .get(field)
            .and_then(|v| serde_json::from_value::<Probe>(v.clone()).ok())
        {
            found.push((kind, probe));
        }
    }
    found
}

/// Whether a pod with `spec` at `ip` has a readiness probe the sandbox runs: its readiness
/// is then the probes', not its declared ports'.
pub fn runs_readiness_probe(spec: &serde_json::Value, ip: Ipv4Addr) -> bool {
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|value| {
            let Ok(container) = serde_json::from_value::<Container>(value.clone()) else {
                return false;
            };
            container_probes(value).iter().any(|(kind, probe)| {
                *kind == ProbeKind::Readiness && probe.plan(&container, ip).is_some()
            })
        })
}

/// kubelet's view of one probe over time: the result stands until the run of opposite
/// outcomes reaches its threshold. Readiness starts failed (a pod is not ready until its
/// probe first passes); liveness starts passing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracker {
    /// The current result.
    pub passing: bool,
    /// Consecutive runs that agreed with each other, and what they said.
    streak: (bool, u32),
    /// How many times the result turned from passing to failing.
    pub failures: u64,
    /// Why the last run failed (empty after a success).
    pub last_error: String,
}

impl Tracker {
    /// A tracker for `kind` before any run.
    pub fn new(kind: ProbeKind) -> Tracker {
        Tracker {
            passing: kind == ProbeKind::Liveness,
            streak: (true, 0),
            failures: 0,
            last_error: String::new(),
        }
    }

    /// Records one run (`Err` with why it failed); whether the result changed.
    pub fn record(&mut self, outcome: Result<(), String>, plan: &Plan) -> bool {
        let ok = outcome.is_ok();
        self.last_error = outcome.err().unwrap_or_default();
        self.streak = if self.streak.0 == ok {
            (ok, self.streak.1.saturating_add(1))
        } else {
            (ok, 1)
        };
        let threshold = if ok {
            plan.success_threshold
        } else {
            plan.failure_threshold
        };
        if self.passing != ok && self.streak.1 >= threshold {
            self.passing = ok;
            if !ok {
                self.failures += 1;
            }
            return true;
        }
        false
    }
}

/// What one node's prober reports for one pod (`<state>/probes/<node>.json`, by pod key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodProbes {
    /// The pod's uid: results of an earlier pod of the same name do not count.
    pub uid: String,
    /// Every readiness probe passes; `None` when the pod has none the sandbox runs.
    pub ready: Option<bool>,
    /// Every liveness probe passes.
    pub live: bool,
    /// How many times a liveness probe turned to failing (kubelet restarts the container
    /// then; the sandbox counts it).
    pub liveness_failures: u64,
    /// The last failure of a failing probe, for messages.
    pub message: String,
}

/// The prober's report file: pod key → results.
pub type ProbeReport = BTreeMap<String, PodProbes>;

/// kubelet's HTTP verdict: 200 to 399 passes.
pub fn http_status_passes(status: u16) -> bool {
    (200..400).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::model::objects::ContainerPort;

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                protocol: None,
            }],
            ..Container::default()
        }
    }

    fn probe(yaml: serde_json::Value) -> Probe {
        serde_json::from_value(yaml).unwrap()
    }

    #[test]
    fn plans_fill_in_kubernetes_defaults_and_resolve_named_ports() {
        let ip = Ipv4Addr::new(10, 244, 1, 2);
        let p = probe(serde_json::json!({"httpGet": {"port": "http"}}));
        let plan = p.plan(&container(), ip).unwrap();
        assert_eq!(
            plan,
            Plan {
                action: Action::Http {
                    addr: "10.244.1.2:8080".parse().unwrap(),
                    path: "/".into(),
                    headers: vec![],
                },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let p = probe(serde_json::json!({
            "tcpSocket": {"port": 9000}, "periodSeconds": 2, "timeoutSeconds": 0,
            "failureThreshold": 1, "successThreshold": 2, "initialDelaySeconds": 5
        }));
        let plan = p.plan(&container(), ip).unwrap();
        assert_eq!(plan.action, Action::Tcp("10.244.1.2:9000".parse().unwrap()));
        assert_eq!(plan.period, Duration::from_secs(2));
        assert_eq!(plan.timeout, Duration::from_secs(1), "at least a second");
        assert_eq!((plan.success_threshold, plan.failure_threshold), (2, 1));
        assert_eq!(plan.initial_delay, Duration::from_secs(5));
        // Not run here: exec, and a port name the container lacks.
        assert_eq!(
            probe(serde_json::json!({"exec": {"command": ["true"]}})).plan(&container(), ip),
            None
        );
        assert_eq!(
            probe(serde_json::json!({"tcpSocket": {"port": "grpc"}})).plan(&container(), ip),
            None
        );
    }

    #[test]
    fn results_flip_only_after_their_threshold() {
        let p = probe(
            serde_json::json!({"tcpSocket": {"port": 1}, "failureThreshold": 2, "successThreshold": 2}),
        );
        let plan = p.plan(&container(), Ipv4Addr::LOCALHOST).unwrap();
        let mut ready = Tracker::new(ProbeKind::Readiness);
        assert!(!ready.passing, "not ready before a first pass");
        assert!(!ready.record(Ok(()), &plan));
        assert!(ready.record(Ok(()), &plan), "two successes make it ready");
        assert!(!ready.record(Err("refused".into()), &plan));
        assert_eq!(ready.last_error, "refused");
        assert!(
            !ready.record(Ok(()), &plan),
            "a success resets the failure run"
        );
        assert!(!ready.record(Err("500".into()), &plan));
        assert!(ready.record(Err("500".into()), &plan));
        assert!(!ready.passing);
        assert_eq!(ready.failures, 1);

        let mut live = Tracker::new(ProbeKind::Liveness);
        assert!(live.passing, "live until proven otherwise");
        live.record(Err("x".into()), &plan);
        live.record(Err("x".into()), &plan);
        assert!(!live.passing);
        assert_eq!(live.failures, 1);
    }

    #[test]
    fn http_verdicts_and_container_fields() {
        assert!(http_status_passes(200) && http_status_passes(302));
        assert!(!http_status_passes(500) && !http_status_passes(404) && !http_status_passes(199));
        let spec = serde_json::json!({
            "name": "a",
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 80}},
            "livenessProbe": {"tcpSocket": {"port": 80}},
            "startupProbe": {"tcpSocket": {"port": 80}}
        });
        let kinds: Vec<ProbeKind> = container_probes(&spec)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, [ProbeKind::Readiness, ProbeKind::Liveness]);
        let ip = Ipv4Addr::new(10, 244, 1, 2);
        assert!(runs_readiness_probe(
            &serde_json::json!({"containers": [spec]}),
            ip
        ));
        let exec = serde_json::json!({"containers": [
            {"name": "a", "readinessProbe": {"exec": {"command": ["true"]}}}
        ]});
        assert!(
            !runs_readiness_probe(&exec, ip),
            "not run: readiness stays the ports'"
        );
    }
}
