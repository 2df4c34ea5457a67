//! kubelet's health probes of ambient pods under STRICT peer authentication: the sandbox's
//! kubelet prober runs them from the node, the node agent's host rule SNATs them to
//! 169.254.7.127, and the in-pod rules let that source past the proxy. Plaintext from
//! anywhere else is still refused; without the host rule the HTTP probe fails.

use e2e::mesh::{get_json, node_exec, wait_captured, wait_ready};
use e2e::metrics::metric_sum;
use e2e::{Component, SETTLE, Sandbox, eventually, meshctl_bin};
use meshctl::sandbox::host::state;
use test_support::manifests::namespace;

use super::{APP_PORT, peer_authentication};

/// The node the probed pods run on.
const NODE: &str = "node2";

/// An http-echo pod on [`NODE`] with an HTTP readiness probe of `path` and a TCP liveness
/// probe, both every second.
fn probed_pod(name: &str, path: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: mesh, labels: {{app: {name}}}}}
spec:
  nodeName: {NODE}
  containers:
  - name: echo
    command: [meshctl, app, http-echo, --port, "{APP_PORT}"]
    ports: [{{name: http, containerPort: {APP_PORT}}}]
    readinessProbe:
      httpGet: {{path: "{path}", port: http}}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      tcpSocket: {{port: {APP_PORT}}}
      periodSeconds: 1
---
"#
    )
}

/// A pod outside the mesh on [`NODE`] whose liveness probe dials a port nothing listens on,
/// and whose readiness probe is an `exec` (which the sandbox does not run).
const DEAD: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: dead, namespace: outside}
spec:
  nodeName: node2
  containers:
  - name: app
    command: [sleep, infinity]
    readinessProbe:
      exec: {command: ["true"]}
    livenessProbe:
      tcpSocket: {port: 9}
      periodSeconds: 1
      failureThreshold: 2
---
"#;

/// The node's `nat` table as `iptables-save` prints it.
fn node_nat(sb: &Sandbox) -> String {
    let out = node_exec(sb, NODE, &["iptables-save", "-t", "nat"]);
    assert!(out.status.success(), "iptables-save on {NODE}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the node holds the probe chain, hooked, with a rule for `ip`.
fn host_rule_for(sb: &Sandbox, ip: std::net::Ipv4Addr) -> bool {
    let nat = node_nat(sb);
    nat.lines().any(|l| l == "-A POSTROUTING -j ISTIO_POSTRT")
        && nat.lines().any(|l| {
            l.starts_with("-A ISTIO_POSTRT ")
                && l.contains(&format!("-d {ip}/32"))
                && l.contains("--to-source 169.254.7.127")
        })
}

/// `(ready, unhealthy, liveness failures)` of pod `name` (in `mesh`, or `namespace/name`),
/// refreshed by a verb.
fn status(sb: &Sandbox, name: &str) -> (bool, bool, u64) {
    let (namespace, name) = name.split_once('/').unwrap_or(("mesh", name));
    let ready = sb.pod(name).expect("meshctl get pods").ready;
    let cluster = state::peek(&sb.state_dir()).expect("readable sandbox state");
    let pod = &cluster.pods[&format!("{namespace}/{name}")];
    (ready, pod.unhealthy, pod.liveness_failures)
}

/// The node agent's own `/metrics` on [`NODE`] (its sandbox port), or `None` while it does
/// not answer.
fn agent_metrics(sb: &Sandbox) -> Option<String> {
    let bin = meshctl_bin().expect("meshctl binary");
    let url = "http://127.0.0.1:15014/metrics";
    let out = node_exec(
        sb,
        NODE,
        &[&bin.display().to_string(), "app", "curl", "--fail", url],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `(addresses covered, failures)` from the agent's metrics.
fn agent_counts(sb: &Sandbox) -> Option<(f64, f64)> {
    let text = agent_metrics(sb)?;
    Some((
        metric_sum(&text, "ztunnel_node_agent_probe_rule_addresses", &[]),
        metric_sum(&text, "ztunnel_node_agent_probe_rule_failures_total", &[]),
    ))
}

/// What `meshctl check` prints (its exit status says only how bad the worst finding is).
fn check(sb: &Sandbox) -> String {
    let out = sb.command().arg("check").output().expect("meshctl check");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// What the kubelet prober last said about pod `mesh/name`.
fn probe_message(sb: &Sandbox, name: &str) -> String {
    let path = sb.state_dir().join("probes").join(format!("{NODE}.json"));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    report[format!("mesh/{name}")]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn probes_pass_under_strict_through_the_node_rule_and_plaintext_stays_refused() {
    let manifests = namespace("mesh", true)
        + &namespace("outside", false)
        + &peer_authentication("STRICT")
        + "---\n"
        + &probed_pod("server", "/ready")
        + &probed_pod("broken", "/?status=500")
        + &e2e::manifests::idle_pod("mesh", "client", "node1", "default")
        + &e2e::manifests::idle_pod("outside", "stranger", "node1", "default");
    let sb = Sandbox::up(&manifests).expect("sandbox up");
    wait_ready(&sb);
    wait_captured(&sb, NODE, &["mesh/broken", "mesh/server"]);
    let server_ip = sb.pod_ip("server").unwrap();
    let broken_ip = sb.pod_ip("broken").unwrap();
    let url = format!("http://{server_ip}:{APP_PORT}/");

    // Captured, STRICT, and probed from the node: ready, and live.
    assert!(
        eventually(SETTLE, || host_rule_for(&sb, server_ip)
            && host_rule_for(&sb, broken_ip)),
        "the node agent SNATs the node's probes of both captured pods:\n{}",
        node_nat(&sb)
    );
    assert!(
        eventually(SETTLE, || status(&sb, "server").0),
        "the server becomes ready: {}",
        probe_message(&sb, "server")
    );
    assert!(
        eventually(SETTLE, || get_json(&sb, "mesh/client", &url).is_ok()),
        "the meshed client reaches the server over mTLS"
    );
    let (_, unhealthy, failures) = status(&sb, "server");
    assert!(!unhealthy && failures == 0, "the server stays live");
    let report = check(&sb);
    assert!(
        report.contains(&format!(
            "{NODE} SNATs its health probes of 2 captured pod addresses"
        )),
        "{report}"
    );
    assert_eq!(
        agent_counts(&sb),
        Some((2.0, 0.0)),
        "the agent's metrics: two addresses covered, no failure"
    );

    // A readiness path answering 500: probed all the same, and never ready.
    assert!(
        eventually(SETTLE, || probe_message(&sb, "broken")
            .contains("statuscode: 500")),
        "the prober reports the 500: {:?}",
        probe_message(&sb, "broken")
    );
    assert!(!status(&sb, "broken").0, "a 500 is not ready");

    // A failing liveness probe shows, and a probe kind the sandbox does not run is named.
    let applied = sb.apply_output(DEAD).expect("meshctl apply");
    let said = String::from_utf8_lossy(&applied.stderr);
    assert!(
        said.contains("spec.containers[0].readinessProbe.exec"),
        "apply names the exec probe it does not run:\n{said}"
    );
    let restarts = || {
        let cluster = state::peek(&sb.state_dir()).expect("readable sandbox state");
        cluster.pods["outside/dead"].containers[0].restarts
    };
    assert!(
        eventually(SETTLE, || {
            let (_, unhealthy, failures) = status(&sb, "outside/dead");
            unhealthy && failures >= 1 && restarts() >= 1
        }),
        "a liveness probe of a closed port fails and the container is restarted"
    );
    let table = sb
        .run(&["get".into(), "pods".into(), "-n".into(), "outside".into()])
        .expect("meshctl get pods");
    let table = String::from_utf8_lossy(&table.stdout);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("dead "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row.get(2), Some(&"Unhealthy"), "{table}");
    assert!(
        row.get(3).and_then(|n| n.parse::<u32>().ok()) >= Some(1),
        "RESTARTS counts the restart:\n{table}"
    );

    // The bypass is for the node's probes only: plaintext from a pod outside the mesh is
    // still refused by STRICT.
    assert!(
        eventually(SETTLE, || get_json(&sb, "outside/stranger", &url).is_err()),
        "STRICT refuses plaintext from outside the mesh"
    );

    // A stopped agent leaves the rule: its pods stay captured, and their probes keep passing
    // (through a restart, or a rolling upgrade's old agent stopping after the new one began).
    let agent = Component::NodeAgent(NODE.into());
    sb.stop(&agent).unwrap();
    assert!(
        host_rule_for(&sb, server_ip),
        "the stopped agent took its rule away:\n{}",
        node_nat(&sb)
    );
    sb.start(&agent).unwrap();
    // The new agent writes the chain whole once it has looked at every pod (its gauge says
    // so); what the old one left serves the pods until then.
    assert!(
        eventually(SETTLE, || agent_counts(&sb)
            .is_some_and(|(covered, _)| covered == 2.0)),
        "the restarted agent writes the chain: {:?}",
        agent_counts(&sb)
    );
    assert!(
        host_rule_for(&sb, server_ip),
        "the restarted agent keeps the rule:\n{}",
        node_nat(&sb)
    );

    // Without the host rule, the node's HTTP probe reaches the proxy, which refuses it.
    let flush = node_exec(&sb, NODE, &["iptables", "-t", "nat", "-F", "ISTIO_POSTRT"]);
    assert!(flush.status.success(), "flushing the probe chain by hand");
    assert!(
        eventually(SETTLE, || !status(&sb, "server").0),
        "without the node rule the readiness probe fails"
    );
    assert!(
        probe_message(&sb, "server").contains("Readiness probe failed"),
        "{}",
        probe_message(&sb, "server")
    );
    let report = check(&sb);
    assert!(
        report.contains(&format!(
            "the probe SNAT rule of {NODE} lacks ambient pods: mesh/broken, mesh/server"
        )),
        "meshctl check names what the node rule lacks:\n{report}"
    );

    // The next agent rewrites the chain from the pods it captures.
    sb.stop(&agent).unwrap();
    sb.start(&agent).unwrap();
    assert!(
        eventually(SETTLE, || host_rule_for(&sb, server_ip)),
        "the restarted agent installs the rule again:\n{}",
        node_nat(&sb)
    );
    assert!(
        eventually(SETTLE, || status(&sb, "server").0),
        "ready again with the rule back: {}",
        probe_message(&sb, "server")
    );
    let hooks = node_nat(&sb)
        .lines()
        .filter(|l| *l == "-A POSTROUTING -j ISTIO_POSTRT")
        .count();
    assert_eq!(hooks, 1, "one jump after a restart");
}
