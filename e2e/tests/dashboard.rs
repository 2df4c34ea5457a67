//! `meshctl dashboard` in a real headless browser (Debian's chromium through chromedriver):
//! the demo shop in the mesh with traffic running, the dashboard's service graph, a
//! deployment's figures against `meshctl stat`'s, its live tap, its certificates, and a
//! stopped ztunnel turning the overview red; and a generated sandbox of 200 workloads whose
//! graph keeps every node apart. Screenshots of every page go to
//! `target/e2e-artifacts/dashboard/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use e2e::mesh::{wait_namespace_captured, wait_ready};
use e2e::{Component, Sandbox, json};
use serde_json::Value;
use test_support::process::KillOnDrop;
use test_support::raw_http;
use test_support::webdriver::{Browser, artifacts};

/// The label that puts the shop in the mesh.
const AMBIENT: &str = "istio.io/dataplane-mode=ambient";
/// Requests per second the client sends to the frontend for the whole test.
const RATE: &str = "20";
/// What the dashboard and `meshctl stat` measure over: long enough to smooth a steady load.
const WINDOW: &str = "20s";
/// How far the dashboard's figures for orders may be from `meshctl stat`'s: both measure a
/// steady load, over windows of the same length a few seconds apart.
const TOLERANCE: f64 = 0.35;

/// Starts the dashboard on a free loopback port; returns it with its URL.
fn start_dashboard(sb: &Sandbox) -> (KillOnDrop, String) {
    let mut child = sb
        .command()
        .args(["dashboard", "--address", "127.0.0.1:0", "--no-browser"])
        .args(["--refresh", "2s", "--window", WINDOW])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("meshctl dashboard starts");
    let stdout = child.stdout.take().expect("its stdout");
    let child = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("its first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    (child, url)
}

#[test]
fn the_dashboard_shows_the_shop_live_in_a_browser() {
    // Never skipped: the test command installs the browser (scripts/host-packages.sh).
    let browser = Browser::start(1400, 1000).unwrap_or_else(|e| panic!("{e}"));
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/demo");
    let sb = Sandbox::up(&demo.display().to_string()).expect("sandbox up");
    sb.label("shop", AMBIENT).unwrap();
    wait_ready(&sb);
    wait_namespace_captured(&sb, "shop");
    let _load = KillOnDrop(
        sb.command()
            .args(["exec", "client", "--", "meshctl", "app", "load"])
            .args([
                "--url",
                "http://frontend.shop:8080/",
                "-n",
                "1000000",
                "-c",
                "2",
            ])
            .args(["--rate", RATE, "--new-conn", "--timeout-ms", "5000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the load starts"),
    );
    let (_dashboard, url) = start_dashboard(&sb);
    let shots = artifacts("dashboard");
    refuses_foreign_hosts_and_writes(&url);

    // The graph: the shop's workloads, mutual TLS from frontend to orders to payments, and
    // the client outside the mesh in plaintext.
    browser.open(&format!("{url}#/graph")).unwrap();
    let graph = browser.wait_for(
        "the graph's mTLS edges",
        "return {nodes: [...document.querySelectorAll('g.node')].map(n => n.dataset.id),
                 edges: [...document.querySelectorAll('g.edge')].map(e =>
                   [e.dataset.from, e.dataset.to, e.dataset.mtls])};",
        |g| {
            let edge = |from: &str, to: &str, mtls: &str| {
                g["edges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e == &serde_json::json!([from, to, mtls]))
            };
            ["orders-v1", "orders-v2"].iter().all(|orders| {
                let orders = format!("shop/{orders}");
                edge("shop/frontend", &orders, "true") && edge(&orders, "shop/payments", "true")
            }) && edge("default/client", "shop/frontend", "false")
        },
    );
    for workload in [
        "frontend",
        "orders-v1",
        "orders-v2",
        "payments",
        "api-gateway",
    ] {
        let id = format!("shop/{workload}");
        assert!(
            graph["nodes"]
                .as_array()
                .unwrap()
                .contains(&Value::String(id.clone())),
            "{id}: {graph}"
        );
    }
    browser.screenshot(&shots.join("graph.png")).unwrap();

    // orders-v1's page, reached by clicking its node: its figures as `stat` measures them.
    browser
        .run("document.querySelector(\"g.node[data-id='shop/orders-v1']\").dispatchEvent(new MouseEvent('click', {bubbles: true})); return location.hash;")
        .unwrap();
    let stat = sb
        .command()
        .args([
            "stat",
            "deploy/orders-v1",
            "-n",
            "shop",
            "--window",
            WINDOW,
            "-o",
            "json",
        ])
        .output()
        .expect("meshctl stat runs");
    assert!(
        stat.status.success(),
        "{}",
        String::from_utf8_lossy(&stat.stderr)
    );
    let stat = json(&String::from_utf8_lossy(&stat.stdout));
    let row = &stat["rows"][0];
    assert_eq!(row["name"], "orders-v1", "{stat}");
    let figures = browser.wait_for("orders-v1's figures",
        "const f = (k) => document.querySelector(`[data-figure=${k}]`)?.textContent;
         return {hash: location.hash, pods: f('pods'), mtls: f('mtls_share'),
                 received: f('read_bytes_per_second'), tap: document.querySelectorAll('#tap tbody tr').length};",
        |f| f["pods"].is_string() && f["received"].as_str().is_some_and(|r| r.parse::<f64>().is_ok_and(|r| r > 0.0)),
    );
    assert_eq!(figures["hash"], "#/workload/deploy/shop/orders-v1");
    assert_eq!(figures["pods"], "2 / 2", "{figures}");
    assert_eq!(row["meshed_pods"], 2);
    assert_eq!(figures["mtls"], "100.0%", "{figures}");
    assert_eq!(row["mtls_share"], 1.0, "{stat}");
    let shown: f64 = figures["received"].as_str().unwrap().parse().unwrap();
    let measured = row["read_bytes_per_second"].as_f64().unwrap();
    eprintln!("orders-v1 receives {shown} B/s on the dashboard, {measured} B/s by meshctl stat");
    assert!(
        (shown - measured).abs() <= TOLERANCE * measured,
        "the dashboard shows {shown} B/s received by orders-v1, stat measured {measured}"
    );

    // The tap: connections of orders-v1 appear while the load runs.
    let tapped = browser.wait_for(
        "live tap rows",
        "return [...document.querySelectorAll('#tap tbody tr')].map(r => r.textContent);",
        |rows| rows.as_array().is_some_and(|r| r.len() >= 3),
    );
    let rows = tapped.as_array().unwrap();
    assert!(
        rows.iter().all(|r| r
            .as_str()
            .unwrap()
            .contains("spiffe://cluster.local/ns/shop/sa/")),
        "{tapped}"
    );
    let received = "return Number(document.getElementById('tap').dataset.received);";
    let before = browser.run(received).unwrap().as_u64().unwrap();
    browser.wait_for("more tap events as requests go on", received, |n| {
        n.as_u64().is_some_and(|n| n > before)
    });
    browser.screenshot(&shots.join("workload.png")).unwrap();

    // The orders Service's page, from the overview's link: its three pods.
    browser.open(&format!("{url}#/overview")).unwrap();
    browser.wait_for(
        "the overview's link to the orders Service",
        "const a = document.querySelector(\"a[href='#/workload/svc/shop/orders']\");
         if (a) a.click(); return location.hash;",
        |hash| hash == "#/workload/svc/shop/orders",
    );
    browser.wait_for(
        "the orders Service's pods",
        "return document.querySelector('[data-figure=pods]')?.textContent;",
        |pods| pods == "3 / 3",
    );
    browser.screenshot(&shots.join("service.png")).unwrap();

    // Certificates: each shop identity, from the ztunnels' config dumps, and the root.
    browser.open(&format!("{url}#/certificates")).unwrap();
    let identities = browser.wait_for("the shop's certificates",
        "return [...document.querySelectorAll('#certificates tbody tr')].map(r => r.children[1].textContent);",
        |ids| {
            ["frontend", "orders", "payments"].iter().all(|sa| {
                let id = format!("spiffe://cluster.local/ns/shop/sa/{sa}");
                ids.as_array()
                    .is_some_and(|ids| ids.iter().any(|i| i == &Value::String(id.clone())))
            })
        },
    );
    assert!(!identities.as_array().unwrap().is_empty());
    browser.screenshot(&shots.join("certificates.png")).unwrap();
    browser.open(&format!("{url}#/findings")).unwrap();
    browser.wait_for(
        "the findings",
        "return document.querySelectorAll('#findings tbody tr').length;",
        |n| n.as_u64() > Some(0),
    );
    browser.screenshot(&shots.join("findings.png")).unwrap();

    // The overview: not red, then red once a ztunnel stops.
    browser.open(&format!("{url}#/overview")).unwrap();
    let status = "return document.getElementById('overview-status')?.dataset.status;";
    // Warnings (findings about the demo's objects) may show; errors may not.
    let healthy = browser.wait_for("a healthy overview", status, |s| s.is_string());
    assert_ne!(
        healthy, "error",
        "the overview is red before anything broke"
    );
    browser.screenshot(&shots.join("overview.png")).unwrap();
    sb.stop(&Component::Ztunnel("node2".into())).unwrap();
    browser.wait_for("a failing overview", status, |s| s == "error");
    let failing = browser
        .run("return document.querySelector(\".check-group[data-group='node proxies']\").dataset.status;")
        .unwrap();
    assert_eq!(failing, "error");
    browser
        .screenshot(&shots.join("overview-ztunnel-stopped.png"))
        .unwrap();
}

/// The dashboard answers only requests for a loopback name (no DNS rebinding), and only GETs.
fn refuses_foreign_hosts_and_writes(url: &str) {
    let address: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("the URL's address");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ask = |request: String| runtime.block_on(raw_http::exchange(address, &request));
    let port = address.port();
    let as_host = |host: &str, method: &str| {
        format!("{method} /api/snapshot HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };
    let foreign = ask(as_host(&format!("mesh.example:{port}"), "GET"));
    assert_eq!(foreign.status, 403, "{foreign:?}");
    let post = ask(as_host(&format!("127.0.0.1:{port}"), "POST"));
    assert_eq!(post.status, 405, "{post:?}");
    let page = ask(as_host(&format!("localhost:{port}"), "GET"));
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.header("content-type"), Some("application/json"));
}

/// `count` one-replica Deployments in namespace `many`, each an idle process.
fn many_workloads(count: usize) -> String {
    let mut yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: many}\n---\n".to_owned();
    for i in 0..count {
        yaml.push_str(&format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: app-{i:03}, namespace: many}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: app-{i:03}}}}}
  template:
    metadata: {{labels: {{app: app-{i:03}}}}}
    spec:
      containers: [{{name: app, command: [sleep, infinity]}}]
---
"#
        ));
    }
    yaml
}

#[test]
fn two_hundred_workloads_each_get_a_place_of_their_own_in_the_graph() {
    let browser = Browser::start(1400, 1000).unwrap_or_else(|e| panic!("{e}"));
    let sb = Sandbox::up(&many_workloads(200)).expect("sandbox up");
    let (_dashboard, url) = start_dashboard(&sb);
    browser.open(&format!("{url}#/graph")).unwrap();
    // Every node's box on the page, as the browser laid it out.
    let boxes = browser.wait_for(
        "200 workloads in the graph",
        "return [...document.querySelectorAll('g.node rect')].map(r => {
           const b = r.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; });",
        |b| b.as_array().is_some_and(|b| b.len() == 200),
    );
    let boxes: Vec<[f64; 4]> = boxes
        .as_array()
        .unwrap()
        .iter()
        .map(|b| std::array::from_fn(|i| b[i].as_f64().unwrap()))
        .collect();
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let apart = a[2] <= b[0] || b[2] <= a[0] || a[3] <= b[1] || b[3] <= a[1];
            assert!(apart, "nodes overlap: {a:?} and {b:?}");
        }
    }
    browser
        .screenshot(&shots_dir_file("graph-200.png"))
        .unwrap();
    browser.open(&format!("{url}#/overview")).unwrap();
    let many = browser.wait_for(
        "the overview's namespace row",
        "return [...document.querySelectorAll('table tbody tr')].map(r => r.textContent)
                 .find(t => t.startsWith('many'));",
        |row| row.is_string(),
    );
    assert!(many.as_str().unwrap().starts_with("many0 / 200"), "{many}");
    let took = browser
        .run("return document.getElementById('updated').textContent;")
        .unwrap();
    eprintln!("200 workloads: {took}");
    browser
        .screenshot(&shots_dir_file("overview-200.png"))
        .unwrap();
}

/// A file of the artifacts folder.
fn shots_dir_file(name: &str) -> PathBuf {
    artifacts("dashboard").join(name)
}

#[test]
fn a_remote_address_needs_the_flag_and_a_taken_port_is_named() {
    let meshctl = e2e::meshctl_bin().expect("meshctl is built");
    let dashboard = |address: &str| {
        let out = std::process::Command::new(&meshctl)
            .args(["--sandbox", "nonexistent", "dashboard", "--no-browser"])
            .args(["--address", address])
            .output()
            .expect("meshctl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = dashboard("0.0.0.0:0");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pass --allow-remote"), "{stderr}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, stderr) = dashboard(&address);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: dashboard: cannot listen on {address}: ")),
        "{stderr}"
    );
}
