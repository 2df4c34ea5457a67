//! `ztunnel-cni` run as a container runtime runs a chained plugin (the spec's environment,
//! the network configuration with `prevResult` on stdin) against a real agent, real
//! namespaces and a proxy answering ZDS.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use test_support::TempDir;
use test_support::netns::TestNetns;
use ztunnel::agent::NodePod;

use super::{Agent, Proxy, WAIT, assert_clean, assert_installed, pod};
use api::zds::workload_request;

/// What the plugin printed and whether it succeeded.
struct Run {
    ok: bool,
    stdout: Value,
}

/// Runs the plugin with `command` for pod `namespace/name` in `netns`, as a runtime does.
async fn plugin(
    command: &str,
    agent_socket: &Path,
    namespace: &str,
    name: &str,
    netns: &Path,
    prev: Option<Value>,
) -> Run {
    let mut config = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "ztunnel-cni",
        "agent_socket": agent_socket,
        "exclude_namespaces": ["kube-system"],
    });
    if let Some(prev) = prev {
        config["prevResult"] = prev;
    }
    let env = [
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", format!("sandbox-{name}")),
        ("CNI_NETNS", netns.display().to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=x"
            ),
        ),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
    ];
    let run = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(test_support::process::workspace_binary("ztunnel-cni"));
        command.env_clear().envs(env);
        test_support::process::output_with_stdin(command, config.to_string().as_bytes())
    });
    let out = tokio::time::timeout(WAIT * 2, run)
        .await
        .expect("the plugin did not finish")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    Run {
        ok: out.status.success(),
        stdout: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// A main plugin's result for a pod at `ip` on `eth0`.
fn prev_result(ip: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": format!("{ip}/32"), "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
    })
}

fn starting(name: &str, namespace: &str, enrolled: bool) -> NodePod {
    pod(name, namespace, &[], enrolled)
}

#[tokio::test]
async fn add_captures_before_the_workload_has_an_address_and_del_releases() {
    let ns = TestNetns::new("ztc-add");
    let plain_ns = TestNetns::new("ztc-plain");
    let dir = TempDir::new("ztc-add");
    let netns_dir = dir.join("netns");
    std::fs::create_dir_all(&netns_dir).unwrap();
    let socket = dir.join("ztunnel.sock");
    let cni_socket = dir.join("cni.sock");
    let agent = Agent::start_cni(&socket, &cni_socket, &netns_dir, vec![]);
    let proxy = Proxy::connect(&socket).await;
    assert!(matches!(
        proxy.next().await.0,
        workload_request::Payload::SnapshotSent(_)
    ));

    // The runtime calls ADD before the controller has listed the pod: the agent waits.
    let add = tokio::spawn({
        let (cni_socket, path) = (cni_socket.clone(), ns.path());
        async move {
            plugin(
                "ADD",
                &cni_socket,
                "shop",
                "web-1",
                &path,
                Some(prev_result("10.77.9.2")),
            )
            .await
        }
    });
    let web = starting("web-1", "shop", true);
    agent
        .feed
        .send_replace(Some(vec![web.clone(), starting("plain-1", "other", false)]));
    let (request, fd) = proxy.next().await;
    match request {
        workload_request::Payload::Add(a) => assert_eq!(a.uid, web.uid),
        other => panic!("expected Add, got {other:?}"),
    }
    let fd = fd.expect("Add carries the namespace");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::File::from(fd).metadata().unwrap()),
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ns.path()).unwrap())
    );
    let added = add.await.unwrap();
    assert!(added.ok, "{}", added.stdout);
    // prevResult passes on unchanged.
    assert_eq!(added.stdout, prev_result("10.77.9.2"));
    assert_installed(&ns);
    let check = plugin(
        "CHECK",
        &cni_socket,
        "shop",
        "web-1",
        &ns.path(),
        Some(prev_result("10.77.9.2")),
    )
    .await;
    assert!(check.ok, "{}", check.stdout);

    // A pod outside the mesh: passed through, untouched.
    let plain = plugin(
        "ADD",
        &cni_socket,
        "other",
        "plain-1",
        &plain_ns.path(),
        Some(prev_result("10.77.9.3")),
    )
    .await;
    assert!(plain.ok, "{}", plain.stdout);
    assert_eq!(plain.stdout, prev_result("10.77.9.3"));
    assert_clean(&plain_ns);

    // A repeated ADD for the same sandbox succeeds without touching the proxy.
    let again = plugin(
        "ADD",
        &cni_socket,
        "shop",
        "web-1",
        &ns.path(),
        Some(prev_result("10.77.9.2")),
    )
    .await;
    assert!(again.ok, "{}", again.stdout);
    assert_installed(&ns);

    // The controller publishes the address the runtime gave: nothing changes for the proxy;
    // the next thing it hears is the release on DEL.
    let mut web_up = web.clone();
    web_up.addresses = vec!["10.77.9.2".parse().unwrap()];
    agent.feed.send_replace(Some(vec![web_up.clone()]));
    // (The agent answers DEL once the proxy acknowledged the release.)
    let del = tokio::spawn({
        let (cni_socket, path) = (cni_socket.clone(), ns.path());
        async move { plugin("DEL", &cni_socket, "shop", "web-1", &path, None).await }
    });
    match proxy.next().await {
        (workload_request::Payload::Del(d), None) => assert_eq!(d.uid, web.uid),
        other => panic!("expected Del, got {other:?}"),
    }
    assert!(del.await.unwrap().ok);
    // Released, so CHECK now fails while the workload lingers.
    let check = plugin(
        "CHECK",
        &cni_socket,
        "shop",
        "web-1",
        &ns.path(),
        Some(prev_result("10.77.9.2")),
    )
    .await;
    assert!(!check.ok);
    assert_eq!(check.stdout["code"], 100);
    agent.stop().await;
}

#[tokio::test]
async fn add_fails_closed_without_a_proxy_or_an_agent() {
    let ns = TestNetns::new("ztc-closed");
    let dir = TempDir::new("ztc-closed");
    let netns_dir = dir.join("netns");
    std::fs::create_dir_all(&netns_dir).unwrap();
    let socket = dir.join("ztunnel.sock");
    let cni_socket = dir.join("cni.sock");
    let prev = Some(prev_result("10.77.9.4"));

    // No agent: ADD of a mesh pod fails with "try again later"; DEL still succeeds; an
    // excluded namespace never asks.
    let away = plugin(
        "ADD",
        &cni_socket,
        "shop",
        "web-2",
        &ns.path(),
        prev.clone(),
    )
    .await;
    assert!(!away.ok);
    assert_eq!(away.stdout["code"], 11, "{}", away.stdout);
    assert_eq!(away.stdout["cniVersion"], "1.0.0");
    assert!(away.stdout["msg"].is_string() && away.stdout["details"].is_string());
    assert!(
        plugin("DEL", &cni_socket, "shop", "web-2", &ns.path(), None)
            .await
            .ok
    );
    let system = plugin(
        "ADD",
        &cni_socket,
        "kube-system",
        "dns-1",
        &ns.path(),
        prev.clone(),
    )
    .await;
    assert!(system.ok);

    // An agent with no proxy connected: refused, and nothing is left in the namespace.
    let agent = Agent::start_cni(
        &socket,
        &cni_socket,
        &netns_dir,
        vec![starting("web-2", "shop", true)],
    );
    let refused = plugin(
        "ADD",
        &cni_socket,
        "shop",
        "web-2",
        &ns.path(),
        prev.clone(),
    )
    .await;
    assert!(!refused.ok);
    assert_eq!(refused.stdout["code"], 100, "{}", refused.stdout);
    let details = refused.stdout["details"].as_str().unwrap_or_default();
    assert!(details.contains("no node proxy"), "{details}");
    assert_clean(&ns);
    agent.stop().await;
}
