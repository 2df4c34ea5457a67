//! `meshctl check` on a live sandbox: it passes when all is well, and names each thing broken
//! (an object the mesh does not read, a stopped ztunnel, a CA root near its end) with a hint
//! and an exit status scripts can use.

use std::time::Duration;

use e2e::mesh::wait_ready;
use e2e::{Component, Sandbox, eventually};
use test_support::manifests::namespace;

/// Upper bound for the sandbox to settle after a change; generous, as the machine may be busy.
const SETTLE: Duration = Duration::from_secs(30);

/// `meshctl check`: exit status and report.
fn check(sb: &Sandbox) -> (i32, String) {
    let out = sb.command().arg("check").output().expect("meshctl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

/// Waits until `check` exits with `code`, returning its last report.
fn check_until(sb: &Sandbox, code: i32) -> String {
    let mut last = (0, String::new());
    let reached = eventually(SETTLE, || {
        last = check(sb);
        last.0 == code
    });
    assert!(
        reached,
        "check never exited {code}; last exit {}:\n{}",
        last.0, last.1
    );
    last.1
}

const TELEMETRY: &str = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
                         metadata: {name: traces, namespace: shop}\n\
                         spec: {tracing: [{providers: [{name: jaeger}]}]}\n";

#[test]
fn check_passes_on_a_healthy_sandbox_and_names_each_thing_broken() {
    let waypoint = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
                    metadata: {name: waypoint, namespace: shop}\n\
                    spec: {gatewayClassName: istio-waypoint, \
                    listeners: [{name: mesh, port: 15008, protocol: HBONE}]}\n";
    let sb = Sandbox::up(&(namespace("shop", true) + waypoint)).expect("sandbox up");
    wait_ready(&sb);

    let healthy = check_until(&sb, 0);
    for expected in [
        "✔ the controller is ready",
        "✔ the CA root certificate is valid for",
        "✔ the ztunnel of node1 is ready",
        "✔ the ztunnel of node2 is ready",
        "✔ the waypoint shop/waypoint-",
        "✔ the mesh acts on all",
        "✔ all ",
    ] {
        assert!(
            healthy.contains(expected),
            "{expected:?} missing from:\n{healthy}"
        );
    }
    let json = sb.command().args(["check", "-o", "json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["checks"][0]["status"], "ok", "{report}");

    // What each proxy holds, from its config dump.
    let proxy_config = |args: &[&str]| -> serde_json::Value {
        let out = sb
            .command()
            .arg("proxy-config")
            .args(args)
            .args(["-o", "json"])
            .output();
        let out = out.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let certs = proxy_config(&["certs", "waypoint", "shop/waypoint"]);
    assert_eq!(
        certs[0]["identity"], "spiffe://cluster.local/ns/shop/sa/waypoint",
        "{certs}"
    );
    assert_eq!(certs[0]["state"], "available", "{certs}");
    let services = proxy_config(&["services", "ztunnel", "node2"]);
    let waypoint_service = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "waypoint" && s["namespace"] == "shop");
    assert!(waypoint_service.is_some(), "{services}");
    let table = sb
        .command()
        .args(["proxy-config", "workloads", "ztunnel", "node1"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("NAMESPACE   NAME"), "{table}");
    assert!(table.contains("waypoint-"), "{table}");

    // Every proxy connected and synced with the controller.
    let status = |sb: &Sandbox| {
        let out = sb
            .command()
            .args(["proxy-status", "-o", "json"])
            .output()
            .unwrap();
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), rows)
    };
    let synced = eventually(SETTLE, || {
        let (code, rows) = status(&sb);
        code == Some(0)
            && rows.as_array().unwrap().len() == 3
            && rows
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["types"][0] == "SYNCED")
    });
    assert!(synced, "{:?}", status(&sb));

    // A Telemetry naming a tracing provider the mesh config does not declare: a warning,
    // exit status 2.
    sb.apply(TELEMETRY).expect("a warning does not fail apply");
    let warned = check_until(&sb, 2);
    assert!(
        warned.contains(
            "Telemetry shop/traces: field spec.tracing[0].providers[0].name: warning: \"jaeger\" \
             names no extension provider of the mesh config"
        ),
        "{warned}"
    );
    sb.delete(TELEMETRY).unwrap();
    check_until(&sb, 0);

    // A stopped ztunnel: an error naming the node and how to start it again.
    let node1 = Component::Ztunnel("node1".into());
    sb.stop(&node1).unwrap();
    let broken = check_until(&sb, 1);
    assert!(
        broken.contains("✘ the ztunnel of node1 is not running"),
        "{broken}"
    );
    assert!(
        broken.contains("meshctl start ztunnel --node node1"),
        "{broken}"
    );
    assert!(
        broken.contains("✔ the ztunnel of node2 is ready"),
        "{broken}"
    );
    let disconnected = eventually(SETTLE, || {
        let (code, rows) = status(&sb);
        code == Some(1)
            && rows
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "ztunnel node1" && r["connected"] == false)
    });
    assert!(disconnected, "{:?}", status(&sb));
    sb.start(&node1).unwrap();
    wait_ready(&sb);
    check_until(&sb, 0);

    // A CA root with 30 days left, as after plugging in a short-lived one.
    let controller = Component::Controller;
    sb.stop(&controller).unwrap();
    let root =
        hbone::Authority::generate_root("cluster.local", Duration::from_secs(30 * 86400)).unwrap();
    let ca = sb.state_dir().join("ca");
    std::fs::write(ca.join("root-cert.pem"), root.root_pem()).unwrap();
    std::fs::write(ca.join("root-key.pem"), root.key_pem()).unwrap();
    sb.start(&controller).unwrap();
    let mut last = String::new();
    let warned = eventually(SETTLE, || {
        let (code, text) = check(&sb);
        last = text;
        code != 0 && last.contains("⚠ the CA root certificate expires in 29 days")
    });
    assert!(warned, "{last}");
    assert!(
        last.contains("ca-cert.pem"),
        "the hint says how to rotate:\n{last}"
    );
}

/// `meshctl check --pre -o json` with `args`: exit status and report.
fn check_pre(args: &[&str]) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(e2e::meshctl_bin().expect("meshctl built"))
        .args(["check", "--pre", "-o", "json"])
        .args(args)
        .output()
        .expect("meshctl runs");
    let report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    (out.status.code().unwrap_or(-1), report)
}

#[test]
fn check_pre_installs_capture_in_a_throwaway_namespace_and_names_what_is_missing() {
    let (code, report) = check_pre(&[]);
    assert_eq!(code, 0, "{report:#}");
    let messages: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages.len(), 5, "{messages:?}");
    for family in ["ipv4", "ipv6"] {
        let line = format!("in-pod capture installs ({family})");
        assert!(messages.contains(&line.as_str()), "{messages:?}");
    }

    // Without the mesh's binaries, nothing can be tried: both are errors.
    let empty = test_support::TempDir::new("e2e-check-pre");
    let bin_dir = empty.path().display().to_string();
    let (code, report) = check_pre(&["--bin-dir", &bin_dir]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["errors"], 2, "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(
        checks[2]["message"],
        format!("missing from {bin_dir}: meshctl, controller, ztunnel, waypoint")
    );
    assert!(checks[3]["hint"].is_string(), "{report:#}");
}
