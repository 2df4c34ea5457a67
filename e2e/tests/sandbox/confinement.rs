//! What a pod may see and do: its processes run as an unprivileged user
//! with no capabilities unless its securityContext says otherwise, in
//! namespaces of their own where the sandbox's state folder (node tokens,
//! the CA's key) is out of sight, and cannot mark sockets to slip past the
//! in-pod capture. Checked both through `meshctl exec` and from a pod's
//! own command.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use e2e::{Options, Sandbox, eventually, json};

use super::{client_pod, echo_pod};

/// An idle pod pinned to `node`, with `pod_security` as its pod-level and
/// `container_security` as its container's securityContext (YAML flow
/// maps, `{}` for none).
fn secured_pod(name: &str, node: &str, pod_security: &str, container_security: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  securityContext: {pod_security}
  containers:
  - name: main
    command: [sleep, infinity]
    securityContext: {container_security}
---
"#
    )
}

/// A sandbox without node proxies: confinement is the sandbox's own doing.
fn up_without_mesh(yaml: &str) -> Sandbox {
    let opts = Options {
        ztunnel: false,
        ..Options::default()
    };
    Sandbox::up_with(yaml, opts).expect("sandbox up")
}

/// The sandbox's files no pod may read: the node tokens, the tokens map,
/// the CA's root key and the state itself.
fn secrets(sb: &Sandbox) -> Vec<PathBuf> {
    let dir = sb.state_dir();
    [
        "tokens/node1",
        "tokens/node2",
        "tokens.yaml",
        "ca/root-key.pem",
        "state.json",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect()
}

/// `/proc/self/status` of a command run in `pod` with `meshctl exec`.
fn exec_status(sb: &Sandbox, pod: &str) -> BTreeMap<String, String> {
    let out = sb.exec(pod, &["cat", "/proc/self/status"]).expect("exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The first (real) id of a `Uid:`/`Gid:` line.
fn real_id(value: &str) -> u32 {
    value
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not an id line: {value:?}"))
}

/// A capability mask line (`CapEff:` and friends).
fn mask(value: &str) -> u64 {
    u64::from_str_radix(value, 16).unwrap_or_else(|_| panic!("not a mask: {value:?}"))
}

/// Capability bits: NET_ADMIN and NET_RAW each allow SO_MARK.
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;
/// What a root container holds: the Pod Security baseline set (CHOWN,
/// DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
/// NET_BIND_SERVICE, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
const ROOT_CAPS: u64 = 0xa804_05fb;

/// Waits for `pod`'s log to contain `marker`; the log.
fn log_with(sb: &Sandbox, pod: &str, marker: &str) -> String {
    let mut log = String::new();
    let done = eventually(Duration::from_secs(20), || {
        log = sb
            .run(&["logs".into(), pod.into()])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        log.contains(marker)
    });
    assert!(done, "{pod} never logged {marker:?}: {log}");
    log
}

#[test]
fn pods_cannot_read_the_state_folder_tokens_or_the_ca_key() {
    let sb = up_without_mesh(
        &(client_pod("node1") + &secured_pod("rooted", "node2", "{runAsUser: 0}", "{}")),
    );
    let secrets = secrets(&sb);
    for f in &secrets {
        assert!(f.is_file(), "{} exists on the host", f.display());
    }
    let state = sb.state_dir().display().to_string();
    // A root container too: the files are out of sight, not just guarded.
    for pod in ["client", "rooted"] {
        for f in &secrets {
            let out = sb.exec(pod, &["cat", &f.display().to_string()]).unwrap();
            assert!(
                !out.status.success(),
                "{pod} read {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        for dir in [state.as_str(), meshctl::sandbox::STATE_ROOT, "/run/netns"] {
            let out = sb.exec(pod, &["ls", dir]).unwrap();
            assert!(!out.status.success(), "{pod} listed {dir}");
        }
    }

    // The pod's own command, as whom it runs and what it could read.
    let paths: Vec<String> = secrets.iter().map(|f| f.display().to_string()).collect();
    let script = format!(
        "grep -E '^(Uid|CapEff|NoNewPrivs):' /proc/self/status; \
         for f in {state} {files}; do if cat $f >/dev/null 2>&1 || ls $f >/dev/null 2>&1; \
         then echo READ $f; else echo HIDDEN $f; fi; done; echo DONE; sleep infinity",
        files = paths.join(" ")
    );
    let snoop = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: snoop}}\nspec:\n  nodeName: node2\n  \
         containers: [{{name: snoop, command: [sh, -c, {script:?}]}}]\n"
    );
    sb.apply(&snoop).unwrap();
    let log = log_with(&sb, "snoop", "DONE");
    assert!(!log.contains("READ "), "{log}");
    assert_eq!(log.matches("HIDDEN ").count(), secrets.len() + 1, "{log}");
    assert!(log.contains("Uid:\t65534\t"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
}

#[test]
fn pods_run_as_nobody_without_capabilities_unless_their_security_context_says_otherwise() {
    let yaml = client_pod("node1")
        + &secured_pod(
            "custom",
            "node1",
            "{runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4000]}",
            "{runAsUser: 2000}",
        )
        + &secured_pod("rooted", "node2", "{runAsUser: 0}", "{}")
        + &secured_pod(
            "binder",
            "node2",
            "{}",
            "{capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}}",
        );
    let sb = up_without_mesh(&yaml);

    let plain = exec_status(&sb, "client");
    assert_eq!(real_id(&plain["Uid"]), 65534, "{plain:?}");
    assert_eq!(real_id(&plain["Gid"]), 65534, "{plain:?}");
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(mask(&plain[set]), 0, "{set}: {plain:?}");
    }
    assert_eq!(plain["NoNewPrivs"], "1");

    // The container's runAsUser wins over the pod's; the rest is the pod's.
    let custom = exec_status(&sb, "custom");
    assert_eq!(real_id(&custom["Uid"]), 2000, "{custom:?}");
    assert_eq!(real_id(&custom["Gid"]), 3000, "{custom:?}");
    assert_eq!(custom["Groups"], "4000", "{custom:?}");
    assert_eq!(mask(&custom["CapEff"]), 0);

    // Root holds the baseline set: neither NET_ADMIN nor NET_RAW.
    let rooted = exec_status(&sb, "rooted");
    assert_eq!(real_id(&rooted["Uid"]), 0, "{rooted:?}");
    assert_eq!(mask(&rooted["CapEff"]), ROOT_CAPS, "{rooted:?}");
    assert_eq!(mask(&rooted["CapBnd"]), ROOT_CAPS, "{rooted:?}");
    assert_eq!(mask(&rooted["CapEff"]) & (CAP_NET_ADMIN | CAP_NET_RAW), 0);

    // An added capability is held by a non-root process, and only it.
    let binder = exec_status(&sb, "binder");
    assert_eq!(real_id(&binder["Uid"]), 65534);
    assert_eq!(mask(&binder["CapEff"]), 1 << 10, "{binder:?}");
    assert_eq!(mask(&binder["CapBnd"]), 1 << 10, "{binder:?}");
}

#[test]
fn run_as_non_root_with_uid_0_is_refused_when_applied() {
    let sb = up_without_mesh(&client_pod("node1"));
    let refused = sb
        .apply(&secured_pod(
            "root",
            "node1",
            "{runAsNonRoot: true}",
            "{runAsUser: 0}",
        ))
        .expect_err("a root container under runAsNonRoot is refused");
    let message = refused.to_string();
    assert!(message.contains("Pod default/root"), "{message}");
    assert!(
        message.contains("spec.containers[0].securityContext.runAsUser"),
        "{message}"
    );
    assert!(message.contains("breaks non-root policy"), "{message}");
    assert!(sb.pods().unwrap().iter().all(|p| p.name != "root"));
    // The same with the user from the pod and the policy on the container,
    // and capabilities that would reach past the pod.
    for (pod_security, container_security, field) in [
        (
            "{runAsUser: 0}",
            "{runAsNonRoot: true}",
            "spec.securityContext.runAsUser",
        ),
        ("{}", "{privileged: true}", "securityContext.privileged"),
        (
            "{}",
            "{capabilities: {add: [SYS_ADMIN]}}",
            "capabilities.add[0]",
        ),
    ] {
        let refused = sb
            .apply(&secured_pod(
                "root",
                "node1",
                pod_security,
                container_security,
            ))
            .expect_err("refused");
        assert!(refused.to_string().contains(field), "{refused}");
    }
    assert!(sb.pods().unwrap().iter().all(|p| p.name != "root"));
}

#[test]
fn pods_cannot_mark_sockets_to_slip_past_the_capture() {
    let probe = env!("CARGO_BIN_EXE_mark-probe");
    let own = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: marker}}\nspec:\n  nodeName: node2\n  \
         containers: [{{name: m, command: [sh, -c, '{probe}; echo DONE; sleep infinity']}}]\n---\n"
    );
    let yaml = client_pod("node1")
        + &secured_pod("rooted", "node1", "{runAsUser: 0}", "{}")
        + &secured_pod("admin", "node2", "{}", "{capabilities: {add: [NET_ADMIN]}}")
        + &own;
    let sb = up_without_mesh(&yaml);
    for pod in ["client", "rooted"] {
        let out = sb.exec(pod, &[probe]).unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{pod} marked a socket: {said}");
        assert!(said.contains("Operation not permitted"), "{pod}: {said}");
    }
    let log = log_with(&sb, "marker", "DONE");
    assert!(log.contains("Operation not permitted"), "{log}");
    // The probe does work: a pod granted NET_ADMIN may mark, as on a node.
    let out = sb.exec("admin", &[probe]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn exec_joins_the_container_and_pods_see_only_their_own_processes() {
    // Port 80 without a capability: pod namespaces let anyone bind it.
    let server = echo_pod("server", "node2").replace("8080", "80");
    let sb = up_without_mesh(&(server + &client_pod("node1")));
    let ip = sb.pod_ip("server").unwrap();
    let reply = json(&sb.http("client", &format!("http://{ip}/")).unwrap());
    assert_eq!(reply["pod"], "server");

    let out = sb
        .exec("client", &["cat", "/proc/sys/kernel/hostname"])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "client");
    // PID 1 is the container's init, the command its child: exec sees the
    // container's processes, not the machine's.
    let out = sb
        .exec("client", &["cat", "/proc/1/cmdline", "/proc/2/cmdline"])
        .unwrap();
    let cmdlines = String::from_utf8_lossy(&out.stdout).replace('\0', " ");
    assert!(cmdlines.contains("sandbox-container"), "{cmdlines}");
    assert!(cmdlines.contains("sleep infinity"), "{cmdlines}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state_dir().join("state.json")).unwrap())
            .unwrap();
    let recorded = state["pods"]["default/server"]["containers"][0]["process"]["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .expect("the server's process");
    // The server itself, seen from the host: the app, unprivileged.
    let server_pid = meshctl::sandbox::command_pid(recorded).expect("the server's command");
    let cmdline = std::fs::read(format!("/proc/{server_pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("http-echo"));
    let status = std::fs::read_to_string(format!("/proc/{server_pid}/status")).unwrap();
    assert!(status.contains("Uid:\t65534\t"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    let out = sb
        .exec("client", &["sh", "-c", &format!("kill -0 {server_pid}")])
        .unwrap();
    assert!(!out.status.success(), "the client can signal the server");
    let out = sb.exec("client", &["ls", "/proc"]).unwrap();
    let pids = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|e| e.parse::<u32>().is_ok())
        .count();
    assert!(pids < 10, "{pids} processes in sight");
}

#[test]
fn a_waypoint_pod_reads_its_own_token_and_nothing_else_of_the_state_folder() {
    let gateway = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                   metadata: {name: waypoint, namespace: default}\n\
                   spec: {gatewayClassName: istio-waypoint, listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n";
    let sb = up_without_mesh(gateway);
    let pod = sb
        .pods()
        .unwrap()
        .into_iter()
        .find(|p| p.name.starts_with("waypoint-"))
        .expect("a waypoint pod");
    assert!(pod.ready, "the waypoint runs: {pod:?}");
    let tokens = sb.state_dir().join("tokens");
    let own = tokens.join("waypoint-default.waypoint");
    let out = sb
        .exec(&pod.name, &["cat", &own.display().to_string()])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = std::fs::read_to_string(&own).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), token.trim());
    let out = sb
        .exec(&pod.name, &["ls", &tokens.display().to_string()])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "waypoint-default.waypoint"
    );
    for f in secrets(&sb) {
        let out = sb
            .exec(&pod.name, &["cat", &f.display().to_string()])
            .unwrap();
        assert!(!out.status.success(), "the waypoint read {}", f.display());
    }
    assert_eq!(real_id(&exec_status(&sb, &pod.name)["Uid"]), 1337);
}

#[test]
fn pods_run_the_sandboxs_binaries_even_from_a_folder_under_tmp() {
    // A checkout under /tmp: every pod gets a /tmp of its own, which would hide the binaries.
    let bin = test_support::TempDir::new("e2e-bin-under-tmp");
    assert!(
        bin.path().starts_with("/tmp"),
        "TMPDIR moves {}",
        bin.path().display()
    );
    std::fs::copy(e2e::meshctl_bin().unwrap(), bin.join("meshctl")).unwrap();
    let sb = up_without_mesh("");
    let file = bin.join("echo.yaml");
    std::fs::write(&file, echo_pod("echo", "node1")).unwrap();
    let args = [
        "--bin-dir".to_owned(),
        bin.path().display().to_string(),
        "apply".to_owned(),
        "-f".to_owned(),
        file.display().to_string(),
    ];
    sb.run(&args).expect("apply");
    let running = eventually(Duration::from_secs(10), || {
        sb.pod("echo").is_ok_and(|p| p.ready)
    });
    let log = sb.command().args(["logs", "echo"]).output().unwrap();
    assert!(
        running,
        "the pod runs meshctl from {}: {}",
        bin.path().display(),
        String::from_utf8_lossy(&log.stdout)
    );
    // The rest of its /tmp is its own.
    let out = sb.exec("echo", &["ls", "/tmp"]).unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let own = bin.path().file_name().unwrap().to_string_lossy();
    assert_eq!(listed.trim(), own, "{listed}");
}
