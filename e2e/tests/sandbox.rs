//! The sandbox itself, no mesh: real namespaces, real processes, real
//! iptables. Every test builds its own small sandbox with a unique name, so
//! they run in parallel.

#[path = "sandbox/confinement.rs"]
mod confinement;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{Sandbox, eventually, json, meshctl_bin, process_exited, unique_name};
use test_support::TempDir;

/// An http-echo pod pinned to a node.
fn echo_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  containers:
  - name: echo
    command: [meshctl, app, http-echo, --port, "8080"]
    ports: [{{name: http, containerPort: 8080}}]
---
"#
    )
}

/// An idle client pod pinned to a node.
fn client_pod(node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {node}
  containers: [{{name: client, command: [sleep, infinity]}}]
---
"#
    )
}

/// A namespace with a 2-replica echo Deployment and its Service.
fn echo_service(ns: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - name: echo
        command: [meshctl, app, http-echo, --port, "9090"]
        env:
        - name: POD_NAMESPACE
          valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}
        ports: [{{name: web, containerPort: 9090}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: web}}]
---
"#
    )
}

/// What a sandbox may leave on the machine; all empty once it is gone.
fn leftovers(name: &str) -> Vec<String> {
    let prefix = meshctl::sandbox::model::addresses::netns_prefix(name);
    let mut found = Vec::new();
    for dir in ["/run/netns", "/etc/netns"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) {
                    found.push(format!("{dir}/{n}"));
                }
            }
        }
    }
    let state = Path::new(meshctl::sandbox::STATE_ROOT).join(name);
    if state.exists() {
        found.push(state.display().to_string());
    }
    // Live processes mentioning the sandbox (the reaper) or running in a
    // namespace of it (checked through /proc/PID/ns/net of every process).
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == std::process::id() as i32 || process_exited(pid) {
                continue;
            }
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == name) {
                found.push(format!("process {pid}: {}", args.join(" ")));
            }
        }
    }
    found
}

#[test]
fn pods_reach_each_other_across_nodes_by_ip() {
    let yaml = echo_pod("server", "node2") + &client_pod("node1");
    let sb = Sandbox::up(&yaml).expect("sandbox up");
    let server = sb.pod("server").unwrap();
    let client = sb.pod("client").unwrap();
    assert_eq!(
        (server.node.as_str(), client.node.as_str()),
        ("node2", "node1")
    );
    assert_ne!(
        server.ip.octets()[2],
        client.ip.octets()[2],
        "pods in different node CIDRs"
    );

    let body = sb
        .http("client", &format!("http://{}:8080/across", server.ip))
        .unwrap();
    let reply = json(&body);
    assert_eq!(reply["pod"], "server");
    assert_eq!(reply["path"], "/across");
    // No NAT between nodes: the server sees the client's own pod IP.
    let seen = reply["client"].as_str().unwrap_or_default();
    assert!(
        seen.starts_with(&format!("{}:", client.ip)),
        "server saw {seen}, client is {}",
        client.ip
    );
}

#[test]
fn services_balance_across_replicas_on_different_nodes() {
    let yaml = echo_service("web") + &client_pod("node1");
    let sb = Sandbox::up(&yaml).expect("sandbox up");
    let pods: Vec<_> = sb
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.namespace == "web")
        .collect();
    assert_eq!(pods.len(), 2);
    let nodes: BTreeSet<_> = pods.iter().map(|p| p.node.clone()).collect();
    assert_eq!(nodes.len(), 2, "replicas spread over both nodes: {pods:?}");

    // A new connection per request: kube-proxy balances connections.
    let report = sb
        .load(
            "client",
            &[
                "--url",
                "http://echo.web/",
                "-n",
                "60",
                "-c",
                "4",
                "--new-conn",
            ],
        )
        .unwrap();
    assert_eq!(report.count(200), 60, "{report:?}");
    let answered: BTreeSet<String> = report.by_pod.keys().cloned().collect();
    let expected: BTreeSet<String> = pods.iter().map(|p| p.name.clone()).collect();
    assert_eq!(answered, expected, "both replicas answered: {report:?}");
    let answering_nodes: BTreeSet<_> = pods
        .iter()
        .filter(|p| answered.contains(&p.name))
        .map(|p| p.node.clone())
        .collect();
    assert_eq!(answering_nodes.len(), 2);
}

#[test]
fn applied_pods_become_reachable_and_deleted_pods_stop() {
    let sb = Sandbox::up(&client_pod("node1")).expect("sandbox up");
    let extra = echo_pod("late", "node2");
    let out = sb.apply(&extra).unwrap();
    assert!(out.contains("pod/late created"), "{out}");
    let ip = sb.pod_ip("late").unwrap();
    let url = format!("http://{ip}:8080/");
    assert_eq!(json(&sb.http("client", &url).unwrap())["pod"], "late");

    // A Service for it resolves and routes at once.
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec: {selector: {app: late}, ports: [{port: 80, targetPort: http}]}\n";
    sb.apply(svc).unwrap();
    assert_eq!(
        json(&sb.http("client", "http://late/").unwrap())["pod"],
        "late"
    );

    let out = sb.delete(&extra).unwrap();
    assert!(out.contains("pod/late deleted"), "{out}");
    assert!(sb.pods().unwrap().iter().all(|p| p.name != "late"));
    let gone = sb.try_http("client", &url, 2000).unwrap();
    assert!(
        !gone.status.success(),
        "deleted pod still answers: {}",
        String::from_utf8_lossy(&gone.stdout)
    );
    let via_service = sb.try_http("client", "http://late/", 2000).unwrap();
    assert!(
        !via_service.status.success(),
        "service without endpoints still answers"
    );
}

#[test]
fn down_leaves_nothing_behind() {
    let yaml = echo_service("shop") + &client_pod("node2");
    let mut sb = Sandbox::up(&yaml).expect("sandbox up");
    let name = sb.name().to_string();
    // Processes recorded in the state, to check each is gone afterwards.
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.state_dir().join("state.json")).unwrap())
            .unwrap();
    let mut pids: Vec<i32> = Vec::new();
    for pod in state["pods"].as_object().unwrap().values() {
        for c in pod["containers"].as_array().unwrap() {
            pids.extend(c["process"]["pid"].as_i64().map(|p| p as i32));
        }
    }
    pids.extend(state["reaper"]["pid"].as_i64().map(|p| p as i32));
    assert_eq!(pids.len(), 4, "3 containers and the reaper: {pids:?}");
    assert!(pids.iter().all(|p| !process_exited(*p)));
    assert!(!leftovers(&name).is_empty());

    sb.down().unwrap();
    assert_eq!(leftovers(&name), Vec::<String>::new());
    let running: Vec<i32> = pids.into_iter().filter(|p| !process_exited(*p)).collect();
    assert!(running.is_empty(), "still running: {running:?}");
    // Nothing was ever added to the host namespace.
    let host_links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&host_links.stdout).contains(&name));
}

#[test]
fn two_sandboxes_with_the_same_addresses_do_not_interfere() {
    let yaml = echo_service("twin") + &client_pod("node1");
    let a = Sandbox::up(&yaml).expect("sandbox a");
    let b = Sandbox::up(&yaml).expect("sandbox b");
    let pods_a = a.pods().unwrap();
    let pods_b = b.pods().unwrap();
    let ips = |pods: &[e2e::PodInfo]| pods.iter().map(|p| p.ip).collect::<BTreeSet<_>>();
    assert_eq!(ips(&pods_a), ips(&pods_b), "same addresses in both");
    for (sb, own, other) in [(&a, &pods_a, &pods_b), (&b, &pods_b, &pods_a)] {
        for _ in 0..4 {
            let reply = json(&sb.http("client", "http://echo.twin/").unwrap());
            let pod = reply["pod"].as_str().unwrap_or_default().to_string();
            assert!(
                own.iter().any(|p| p.name == pod),
                "{} answered by {pod}",
                sb.name()
            );
            assert!(!other.iter().any(|p| p.name == pod));
        }
    }
}

#[test]
fn a_killed_owner_takes_its_sandbox_with_it() {
    let name = unique_name("owner");
    let bin = meshctl_bin().unwrap();
    let scratch = TempDir::new("e2e-owner");
    let file = scratch.write("owner.yaml", echo_pod("server", "node2"));
    // The owner is a shell that brings the sandbox up, then becomes `sleep`
    // (same PID) until killed.
    let script = format!(
        "{bin} --sandbox {name} up {file} --owner-pid $$ >/dev/null && echo READY && exec sleep 600",
        bin = bin.display(),
        file = file.display()
    );
    let mut owner = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = owner.stdout.take().unwrap();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    drop(scratch);
    assert_eq!(line.trim(), "READY", "sandbox came up");
    assert!(!leftovers(&name).is_empty());

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(owner.id() as i32, libc::SIGKILL) };
    let _ = owner.wait();
    let clean = eventually(Duration::from_secs(60), || leftovers(&name).is_empty());
    if !clean {
        // Leave nothing even when failing.
        let _ = Command::new(&bin)
            .args(["--sandbox", &name, "down"])
            .output();
    }
    assert!(clean, "reaper left: {:?}", leftovers(&name));
}

#[test]
fn invalid_yaml_names_the_file_and_field() {
    let dir = TempDir::new("e2e-bad");
    dir.write("good.yaml", client_pod("node1"));
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: many\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}\n";
    dir.write("web.yaml", bad);
    let name = unique_name("bad");
    let out = Command::new(meshctl_bin().unwrap())
        .args(["--sandbox", &name, "up"])
        .arg(dir.path())
        .output()
        .unwrap();
    drop(dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("web.yaml"), "{stderr}");
    assert!(stderr.contains("Deployment default/web"), "{stderr}");
    assert!(stderr.contains("spec.replicas"), "{stderr}");
    assert_eq!(leftovers(&name), Vec::<String>::new(), "nothing built");
}

#[test]
fn service_names_resolve_in_all_forms() {
    let yaml = echo_service("names")
        + &client_pod("node1").replace("name: client}", "name: client, namespace: names}");
    let sb = Sandbox::up(&yaml).expect("sandbox up");
    for host in ["echo", "echo.names", "echo.names.svc.cluster.local"] {
        let reply = json(&sb.http("names/client", &format!("http://{host}/")).unwrap());
        assert_eq!(reply["namespace"], "names", "{host}: {reply}");
        assert_eq!(reply["headers"]["host"], host);
    }
    // From another namespace only the qualified forms exist.
    sb.apply(&client_pod("node2")).unwrap();
    assert!(sb.http("client", "http://echo.names/").is_ok());
    let short = sb.try_http("client", "http://echo/", 2000).unwrap();
    assert!(!short.status.success());
}

#[test]
fn exec_returns_the_exit_code_and_logs_show_output() {
    let sb = Sandbox::up(&client_pod("node1")).expect("sandbox up");
    let out = sb
        .exec("client", &["sh", "-c", "echo $HOSTNAME; exit 3"])
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "client");
    let talk = "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec: {containers: [{name: t, command: [sh, -c, 'echo hello from $(HOSTNAME); sleep infinity']}]}\n";
    sb.apply(talk).unwrap();
    let logged = eventually(Duration::from_secs(10), || {
        sb.run(&["logs".into(), "talker".into()])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("hello from talker"))
            .unwrap_or(false)
    });
    assert!(logged);
}

#[test]
fn the_state_folder_holds_kubernetes_objects_for_the_controller() {
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: st}\nspec: {action: DENY}\n";
    let sb = Sandbox::up(&(echo_service("st") + policy)).expect("sandbox up");
    let read = |rel: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(sb.state_dir().join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let pods: Vec<e2e::PodInfo> = sb
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.namespace == "st")
        .collect();
    assert_eq!(pods.len(), 2, "both echo replicas: {pods:?}");
    for pod in &pods {
        let obj = read(&format!("pods/st/{}.yaml", pod.name));
        assert_eq!(obj["kind"], "Pod");
        assert_eq!(obj["spec"]["nodeName"], pod.node.as_str());
        assert_eq!(obj["status"]["podIP"], pod.ip.to_string().as_str());
        assert_eq!(obj["status"]["phase"], "Running");
        assert_eq!(obj["metadata"]["labels"]["app"], "echo");
        assert_eq!(obj["metadata"]["uid"].as_str().map(str::len), Some(36));
    }
    let svc = read("manifests/st/service-echo.yaml");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "{svc:?}"
    );
    // Kinds the sandbox does not act on are kept whole for the controller.
    assert_eq!(
        read("manifests/st/authorizationpolicy-deny-all.yaml")["spec"]["action"],
        "DENY"
    );

    sb.label("st", "istio.io/dataplane-mode=ambient").unwrap();
    let ns = read("manifests/_cluster/namespace-st.yaml");
    assert_eq!(
        ns["metadata"]["labels"]["istio.io/dataplane-mode"],
        "ambient"
    );
    sb.label("st", "istio.io/dataplane-mode-").unwrap();
    let ns = read("manifests/_cluster/namespace-st.yaml");
    assert!(
        ns["metadata"]["labels"]
            .get("istio.io/dataplane-mode")
            .is_none()
    );
}
