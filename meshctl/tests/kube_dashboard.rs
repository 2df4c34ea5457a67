//! `meshctl dashboard` in Kubernetes mode against a fake API server serving the busy shop:
//! the built binary, pointed at it with `--kubeconfig`, serves the figures `stat` computes
//! from the proxies' metrics (through the pod proxy), `check`'s checks, the root the
//! controller publishes and the certificates the proxies' gauges show; the live tap says why
//! it cannot run there. The same pages in a real headless browser (Debian's chromium through
//! chromedriver), screenshots in `target/e2e-artifacts/dashboard-kube/`.

mod kube_cluster;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;

use kube_cluster::Cluster;
use kube_cluster::shop::*;
use serde_json::Value;
use test_support::fake_kube::Reply;
use test_support::process::KillOnDrop;
use test_support::raw_http::{Reply as HttpReply, exchange};
use test_support::webdriver::{Browser, artifacts};

const ORDERS: &str = "spiffe://cluster.local/ns/shop/sa/orders";
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

/// A proxy's certificate gauges as the mesh's proxies export them, for one identity issued
/// `age` seconds before `now` and expiring `left` seconds after it.
fn certificate_gauges(component: &str, identity: &str, now: u64, age: u64, left: u64) -> String {
    let labels = format!("{{identity=\"{identity}\"}}");
    format!(
        "# TYPE {component}_certificate_expiration_timestamp_seconds gauge\n\
         {component}_certificate_expiration_timestamp_seconds{labels} {}\n\
         # TYPE {component}_certificate_issued_timestamp_seconds gauge\n\
         {component}_certificate_issued_timestamp_seconds{labels} {}\n",
        now + left,
        now - age
    )
}

/// The busy shop whose ztunnels also hold a certificate each: frontend's on node1 with a
/// quarter of its day left at most (a warning), orders' on node2 fresh.
fn busy_shop_with_certificates() -> Cluster {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let hour = 3600;
    let node1 = certificate_gauges("ztunnel", FRONTEND, now, 21 * hour, 3 * hour);
    let node2 = certificate_gauges("ztunnel", ORDERS, now, hour, 23 * hour);
    let text = |body: String, certificates: &str| Reply::Text(200, format!("{body}{certificates}"));
    let [(z1_before, z1_after), (z2_before, z2_after)] = ztunnels();
    let (wp_before, wp_after) = waypoint();
    Cluster::serve(shop(
        vec![text(z1_before, &node1), text(z1_after, &node1)],
        vec![text(z2_before, &node2), text(z2_after, &node2)],
        vec![text(wp_before, ""), text(wp_after, "")],
    ))
}

/// The dashboard's process and where it listens.
struct Dashboard {
    _process: KillOnDrop,
    address: SocketAddr,
}

impl Dashboard {
    /// Starts `meshctl --kubeconfig … dashboard` on a free loopback port, refreshing every
    /// second over a window long enough to keep the first scrape as its start.
    fn start(cluster: &Cluster) -> Self {
        let mut command = cluster.command();
        command
            .arg("--kubeconfig")
            .arg(cluster.dir.join("kubeconfig"))
            .args(["dashboard", "--no-browser", "--address", "127.0.0.1:0"])
            .args(["--refresh", "1s", "--window", "10m"])
            .stdout(Stdio::piped());
        let mut child = command.spawn().expect("meshctl dashboard starts");
        let stdout = child.stdout.take().expect("its stdout");
        let process = KillOnDrop(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the dashboard's first line");
        let url = line
            .trim()
            .rsplit(" at ")
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.starts_with("dashboard of the cluster of "),
            "first line: {line:?}"
        );
        let address = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("{url:?}: {e}"));
        Self {
            _process: process,
            address,
        }
    }

    /// `GET path`, as a browser on the dashboard's own page asks.
    async fn get(&self, path: &str) -> HttpReply {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        exchange(self.address, &request).await
    }

    /// The snapshot once two scrapes exist (its figures cover a window).
    async fn measured_snapshot(&self) -> Value {
        let mut latest = Value::Null;
        for _ in 0..600 {
            latest = self.snapshot().await;
            if latest["window_seconds"].as_f64().is_some_and(|s| s > 0.0) {
                return latest;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no window measured after a minute: {latest}");
    }

    /// The latest snapshot.
    async fn snapshot(&self) -> Value {
        let reply = self.get("/api/snapshot").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).expect("JSON")
    }
}

fn row<'a>(rows: &'a Value, namespace: &str, name: &str) -> &'a Value {
    rows.as_array()
        .expect("rows")
        .iter()
        .find(|r| r["namespace"] == namespace && r["name"] == name)
        .unwrap_or_else(|| panic!("no row {namespace}/{name} in {rows}"))
}

#[tokio::test]
async fn the_dashboard_shows_a_clusters_figures_checks_and_certificates_through_its_api_server() {
    let cluster = busy_shop_with_certificates();
    let dashboard = Dashboard::start(&cluster);
    let snapshot = dashboard.measured_snapshot().await;
    assert_eq!(snapshot["error"], Value::Null, "{snapshot}");
    assert_eq!(snapshot["unreachable"], serde_json::json!([]));

    // `stat`'s figures, from the two scrapes the window spans: the same as `stat deploy`,
    // `stat svc` and `stat ns` compute from them.
    let seconds = number(&snapshot["window_seconds"]);
    assert_orders_figures(row(&snapshot["deployments"], "shop", "orders"), seconds);
    assert_orders_figures(row(&snapshot["services"], "shop", "orders"), seconds);
    let shop = row(&snapshot["namespaces"], "shop", "shop");
    assert_eq!(
        (shop["meshed_pods"].as_u64(), shop["pods"].as_u64()),
        (Some(3), Some(4))
    );
    // The graph joins frontend to orders over mutual TLS, as `edges` sees it.
    let links = snapshot["graph"]["links"].as_array().expect("graph links");
    assert!(
        links.iter().any(|l| l["from"] == "shop/frontend"
            && l["to"] == "shop/orders"
            && l["secured"] == true),
        "{links:?}"
    );

    // `check` against the cluster: every check passes on the healthy fake.
    assert_eq!(snapshot["status"], "ok", "{}", snapshot["check_groups"]);
    let groups: Vec<&str> = snapshot["check_groups"]
        .as_array()
        .expect("check groups")
        .iter()
        .filter_map(|g| g["group"].as_str())
        .collect();
    assert!(groups.contains(&"kubernetes API"), "{groups:?}");
    // The root the controller publishes (a year, as the fake's ConfigMap has it, with the
    // minute of clock skew roots are backdated by).
    let root = &snapshot["root"];
    let lifetime = number(&root["not_after"]) - number(&root["not_before"]);
    assert!((lifetime - 365.0 * 86_400.0).abs() <= 120.0, "{root}");
    assert_eq!(root["check"]["status"], "ok");

    // The certificates, from the proxies' gauges.
    let certificates = snapshot["certificates"].as_array().expect("certificates");
    let of = |identity: &str| {
        certificates
            .iter()
            .find(|c| c["identity"] == identity)
            .unwrap_or_else(|| panic!("no certificate of {identity}: {certificates:?}"))
    };
    let (frontend, orders) = (of(FRONTEND), of(ORDERS));
    assert_eq!(
        (frontend["proxy"].as_str(), frontend["status"].as_str()),
        (Some("ztunnel node1"), Some("warning"))
    );
    assert_eq!(
        (orders["proxy"].as_str(), orders["status"].as_str()),
        (Some("ztunnel node2"), Some("ok"))
    );
    let left = number(&orders["seconds_left"]);
    assert!(left > 22.0 * 3600.0 && left <= 23.0 * 3600.0, "{orders}");

    // Every proxy was scraped through the pod proxy, more than once.
    let paths = cluster.paths();
    let scraped = paths.iter().filter(|p| p.ends_with(":15020/proxy/metrics"));
    assert!(scraped.count() >= 6, "{paths:?}");

    // The live tap needs the proxies' admin port: it says so instead of showing nothing.
    let tap = dashboard
        .get("/api/tap?resource=deploy&namespace=shop&name=orders")
        .await;
    assert_eq!(tap.status, 200);
    assert!(tap.body.contains("event: failure"), "{}", tap.body);
    assert!(
        tap.body.contains("out of the API server's reach"),
        "{}",
        tap.body
    );
}

#[tokio::test]
async fn a_cluster_without_the_mesh_turns_the_overview_red() {
    // The fake knows no path: no CRDs, no controller, no proxies.
    let cluster = Cluster::serve(test_support::fake_kube::Routes::new());
    let dashboard = Dashboard::start(&cluster);
    let mut snapshot = Value::Null;
    for _ in 0..600 {
        snapshot = dashboard.snapshot().await;
        if snapshot["at"].as_u64().is_some_and(|at| at > 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(snapshot["status"], "error", "{snapshot}");
}

#[test]
fn a_clusters_graph_certificates_and_checks_show_in_a_browser() {
    // Never skipped: the test command installs the browser (scripts/host-packages.sh).
    let browser = Browser::start(1400, 1000).unwrap_or_else(|e| panic!("{e}"));
    let cluster = busy_shop_with_certificates();
    let dashboard = Dashboard::start(&cluster);
    let url = format!("http://{}/", dashboard.address);
    let shots = artifacts("dashboard-kube");

    // The graph: frontend to orders over mutual TLS, as the proxies' metrics tell it.
    browser.open(&format!("{url}#/graph")).unwrap();
    let graph = browser.wait_for(
        "the graph's mTLS edge",
        "return {nodes: [...document.querySelectorAll('g.node')].map(n => n.dataset.id),
                 edges: [...document.querySelectorAll('g.edge')].map(e =>
                   [e.dataset.from, e.dataset.to, e.dataset.mtls])};",
        |g| {
            g["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e == &serde_json::json!(["shop/frontend", "shop/orders", "true"]))
        },
    );
    let nodes = graph["nodes"].as_array().expect("nodes");
    for id in ["shop/frontend", "shop/orders"] {
        assert!(nodes.contains(&Value::String(id.into())), "{id}: {graph}");
    }
    // Its label: the requests per second and success rate the waypoint counts for that
    // edge, as the snapshot the page received has them.
    let edge = browser.wait_for(
        "the edge's request figures",
        "const l = snapshot?.graph.links.find(l => l.from === 'shop/frontend' && l.to === 'shop/orders');
         const e = document.querySelector(\"g.edge[data-from='shop/frontend'][data-to='shop/orders'] text\");
         return {text: e?.textContent, rps: l?.requests_per_second, success: l?.success_rate};",
        |e| e["rps"].as_f64().is_some_and(|r| r > 0.0) && e["text"].is_string(),
    );
    let (rps, success) = (number(&edge["rps"]), number(&edge["success"]));
    assert!(success > 0.0 && success < 1.0, "{edge}");
    assert_eq!(
        edge["text"],
        format!("{rps:.1} rps {:.1}%", 100.0 * success),
        "{edge}"
    );
    browser.screenshot(&shots.join("graph.png")).unwrap();

    // The certificates: frontend's, with a quarter of its life left at most, highlighted.
    browser.open(&format!("{url}#/certificates")).unwrap();
    let rows = browser.wait_for(
        "the proxies' certificates",
        "return [...document.querySelectorAll('#certificates tbody tr')]
                  .map(r => [r.children[1].textContent, r.className]);",
        |rows| rows.as_array().is_some_and(|r| r.len() >= 2),
    );
    let class_of = |identity: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == identity)
            .unwrap_or_else(|| panic!("no row of {identity}: {rows}"))[1]
            .clone()
    };
    assert_eq!(class_of(FRONTEND), "warning", "{rows}");
    assert_eq!(class_of(ORDERS), "", "{rows}");
    browser.screenshot(&shots.join("certificates.png")).unwrap();

    // The overview: the cluster's checks pass.
    browser.open(&format!("{url}#/overview")).unwrap();
    let status = "return document.getElementById('overview-status')?.dataset.status;";
    browser.wait_for("a healthy overview", status, |s| s == "ok");
    browser.screenshot(&shots.join("overview.png")).unwrap();
}
