//! The mesh fails closed: restarts of the control plane and policies that cannot be understood
//! never let through what policy forbids. Each test builds its own two-node sandbox.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::manifests::{echo_pod, idle_pod};
use e2e::mesh::{NODES, captured, wait_captured, wait_ready, ztunnel_dump};
use e2e::{Component, SETTLE, Sandbox, eventually};
use test_support::TempDir;
use test_support::manifests::namespace;

/// The echo server's port.
const APP_PORT: u16 = 8080;

/// A client on node1 and a server (`app: server`) on node2, both in the ambient namespace
/// `mesh`, plus `extra`; returned once both are captured, with the server's IP.
fn meshed_pair(extra: &str) -> (Sandbox, Ipv4Addr) {
    let manifests = namespace("mesh", true)
        + &echo_pod("mesh", "server", "node2", APP_PORT)
        + &idle_pod("mesh", "client", "node1", "default")
        + extra;
    let sb = Sandbox::up(&manifests).expect("sandbox up");
    wait_ready(&sb);
    wait_captured(&sb, "node1", &["mesh/client"]);
    wait_captured(&sb, "node2", &["mesh/server"]);
    let server_ip = sb.pod_ip("server").unwrap();
    (sb, server_ip)
}

/// Whether a GET from the client to the server gets an answer.
fn reaches(sb: &Sandbox, server_ip: Ipv4Addr) -> bool {
    let url = format!("http://{server_ip}:{APP_PORT}/");
    sb.try_http("mesh/client", &url, 3000)
        .is_ok_and(|out| out.status.success())
}

/// A DENY policy on the server for every caller.
const DENY_SERVER: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-server, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{}]
---
"#;

/// `count` Services without endpoints in namespace `bulk`: configuration weight only.
fn bulk_services(count: usize) -> String {
    let mut yaml = namespace("bulk", false);
    for i in 0..count {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bulk}}\nspec: {{ports: [{{port: 80}}]}}\n---\n"
        ));
    }
    yaml
}

/// Workloads and services in `node`'s ztunnel, from its dump (`None` while it does not
/// answer).
fn held(sb: &Sandbox, node: &str) -> Option<(usize, usize)> {
    let dump = ztunnel_dump(sb, node);
    let count = |key: &str| dump["config"][key].as_array().map(Vec::len);
    Some((count("workloads")?, count("services")?))
}

#[test]
fn controller_restarts_with_a_large_config_never_let_denied_traffic_through() {
    const SERVICES: usize = 5000;
    const RESTARTS: usize = 5;
    let (sb, server_ip) = meshed_pair(&(DENY_SERVER.to_owned() + &bulk_services(SERVICES)));
    assert!(
        eventually(SETTLE, || NODES.iter().all(
            |n| held(&sb, n).is_some_and(|(_, services)| services >= SERVICES)
        )),
        "every ztunnel holds the {SERVICES} services"
    );
    assert!(!reaches(&sb, server_ip), "the policy denies the client");
    let before: Vec<(usize, usize)> = NODES.iter().map(|n| held(&sb, n).unwrap()).collect();

    let done = AtomicBool::new(false);
    let url = format!("http://{server_ip}:{APP_PORT}/denied");
    let (allowed, lowest) = std::thread::scope(|s| {
        // A denied client, on new connections, all along.
        let client = s.spawn(|| {
            let mut allowed = 0;
            let mut sent = 0;
            while !done.load(Ordering::Relaxed) {
                let args = [
                    "--url",
                    &url,
                    "-n",
                    "20",
                    "-c",
                    "2",
                    "--rate",
                    "20",
                    "--new-conn",
                    "--timeout-ms",
                    "2000",
                ];
                let report = sb.load("mesh/client", &args).expect("load");
                allowed += report.count(200);
                sent += 20;
            }
            (allowed, sent)
        });
        // What each ztunnel holds, sampled from its admin port all along.
        let sampler = s.spawn(|| {
            let mut lowest = before.clone();
            while !done.load(Ordering::Relaxed) {
                for (i, node) in NODES.iter().enumerate() {
                    if let Some((workloads, services)) = held(&sb, node) {
                        lowest[i].0 = lowest[i].0.min(workloads);
                        lowest[i].1 = lowest[i].1.min(services);
                    }
                    assert!(
                        captured(&sb, node).len() == 1,
                        "{node} still captures its pod"
                    );
                }
            }
            lowest
        });
        for _ in 0..RESTARTS {
            sb.restart(&Component::Controller)
                .expect("controller restart");
            // Let the proxies reconnect and resync before the next restart.
            std::thread::sleep(Duration::from_secs(2));
        }
        done.store(true, Ordering::Relaxed);
        let (allowed, sent) = client.join().expect("client thread");
        assert!(sent > 0);
        (allowed, sampler.join().expect("sampler thread"))
    });
    assert_eq!(allowed, 0, "requests the DENY policy forbids got through");
    assert_eq!(
        lowest, before,
        "a ztunnel's config shrank during the restarts"
    );
    for node in NODES {
        let log = sb.logs(&Component::NodeAgent(node.to_owned())).unwrap();
        assert!(
            !log.contains("releasing"),
            "the node agent of {node} released a pod:\n{log}"
        );
    }
}

/// A policy on the server that cannot be understood, the field `meshctl apply` must name, and
/// what it must say the policy does meanwhile.
struct Broken {
    yaml: &'static str,
    field: &'static str,
    consequence: &'static str,
}

/// A DENY with a typo in its action (it would have denied one namespace only).
const TYPO_IN_ACTION: Broken = Broken {
    yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENNY
  rules: [{from: [{source: {namespaces: [elsewhere]}}]}]
"#,
    field: "field spec.action",
    consequence: "denies every request",
};

/// A DENY whose `namespaces` is a string, not a list: the document does not decode.
const WRONG_TYPE_IN_DENY: Broken = Broken {
    yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{from: [{source: {namespaces: elsewhere}}]}]
"#,
    field: "field spec.rules[0].from[0].source.namespaces",
    consequence: "denies every request",
};

/// A DENY whose API group is mistyped: no API server would hold it, but the sandbox and a
/// config folder do, and what it would deny is denied.
const TYPO_IN_GROUP: Broken = Broken {
    yaml: r#"apiVersion: securty.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rules: [{from: [{source: {namespaces: [elsewhere]}}]}]
"#,
    field: "did you mean apiVersion: security.istio.io/v1?",
    consequence: "denies every request",
};

/// An ALLOW with a misspelt `from`: read without it, its rule would match every caller.
const TYPO_IN_FIELD_OF_ALLOW: Broken = Broken {
    yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules: [{form: [{source: {namespaces: [elsewhere]}}]}]
"#,
    field: "field spec.rules[0].form: unknown field",
    consequence: "allows nothing",
};

/// A DENY with a misspelt `rules`: read without it, it would deny nothing.
const TYPO_IN_RULES_OF_DENY: Broken = Broken {
    yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: DENY
  rule: [{from: [{source: {notNamespaces: [elsewhere]}}]}]
"#,
    field: "field spec.rule: unknown field",
    consequence: "denies every request",
};

/// An ALLOW that would have let the client in, with a malformed principal.
const MALFORMED_ALLOW: Broken = Broken {
    yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: mesh}
spec:
  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/*/sa/default"]}}]}]
"#,
    field: "field spec.rules[0].from[0].source.principals[0]",
    consequence: "allows nothing",
};

#[test]
fn fresh_policies_that_cannot_be_understood_fail_closed_and_apply_says_why() {
    let (sb, server_ip) = meshed_pair("");
    assert!(
        eventually(SETTLE, || reaches(&sb, server_ip)),
        "the client reaches the server before any policy"
    );
    let scratch = TempDir::new("e2e-fail-closed");
    let file = scratch.join("broken-policy.yaml");
    for broken in [
        TYPO_IN_ACTION,
        WRONG_TYPE_IN_DENY,
        TYPO_IN_GROUP,
        TYPO_IN_FIELD_OF_ALLOW,
        TYPO_IN_RULES_OF_DENY,
        MALFORMED_ALLOW,
    ] {
        std::fs::write(&file, broken.yaml).unwrap();
        let args = [
            "apply".to_owned(),
            "-f".to_owned(),
            file.display().to_string(),
        ];
        let refused = sb.run(&args).expect_err("apply exits non-zero");
        let text = refused.to_string();
        for expected in [
            &file.display().to_string(),
            "AuthorizationPolicy mesh/broken",
            broken.field,
            broken.consequence,
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(
            eventually(SETTLE, || !reaches(&sb, server_ip)),
            "{}: the client is denied",
            broken.field
        );
        // Steadily denied, not just once.
        for _ in 0..5 {
            assert!(!reaches(&sb, server_ip), "{}", broken.field);
        }
        sb.delete(broken.yaml).unwrap();
        assert!(
            eventually(SETTLE, || reaches(&sb, server_ip)),
            "{}: removing the policy lets the client in again",
            broken.field
        );
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_controllers_debug_endpoint_refuses_pods_but_not_probes_or_the_operator() {
    let (sb, _) = meshed_pair("");
    let admin = format!("http://{}:15014", sb.controller_ip());
    let status_from_pod = |path: &str| {
        let url = format!("{admin}{path}");
        let out = sb
            .exec("mesh/client", &["meshctl", "app", "curl", "-i", &url])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().next().unwrap_or_default().to_owned()
    };
    let refused = status_from_pod("/debug/config_dump");
    assert!(refused.contains("403"), "{refused}");
    for open in ["/ready", "/metrics"] {
        let status = status_from_pod(open);
        assert!(status.contains("200"), "{open}: {status}");
    }
    // The operator, on the controller's host (through meshctl's forwarder), still reads it.
    let dump = sb.config_dump().expect("meshctl config dump");
    assert!(dump[api::ADDRESS_TYPE_URL].is_object(), "{dump}");
}
