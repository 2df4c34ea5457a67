//! meshctl's Kubernetes mode against a fake API server: the built binary, pointed at it with
//! `--kubeconfig`, checks, analyzes and shows proxy status from what the fake serves; the
//! requests the fake received show how it got there.

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use test_support::TempDir;
use test_support::fake_kube::{FakeKube, Reply, Routes, list};

const DAY: Duration = Duration::from_secs(24 * 3600);
const ADMIN: &str = "/api/v1/namespaces/istio-system/services/istiod:15014/proxy";
const ZTUNNEL_DS: &str = "/apis/apps/v1/namespaces/istio-system/daemonsets/ztunnel";
const ROOT_CONFIGMAP: &str = "/api/v1/namespaces/istio-system/configmaps/istio-ca-root-cert";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
const WAYPOINT: &str = "type.googleapis.com/mesh.waypoint.v1.Waypoint";

fn metadata(namespace: &str, name: &str) -> Value {
    json!({"name": name, "namespace": namespace, "resourceVersion": "1"})
}

fn ready_pod(namespace: &str, name: &str, node: &str, labels: Value) -> Value {
    let mut meta = metadata(namespace, name);
    meta["labels"] = labels;
    json!({"metadata": meta, "spec": {"nodeName": node, "serviceAccountName": "default"},
           "status": {"phase": "Running", "podIP": "10.244.0.9",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn root_config_map(valid_for: Duration) -> Value {
    let root = hbone::Authority::generate_root("cluster.local", valid_for).expect("a root");
    json!({"metadata": metadata("istio-system", "istio-ca-root-cert"),
           "data": {"root-cert.pem": root.root_pem()}})
}

fn client(node: &str, types: Value) -> Value {
    json!({"node": node, "identity": "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
           "connected_at": 1, "types": types})
}

fn synced(types: &[&str]) -> Value {
    let mut all = serde_json::Map::new();
    for type_url in types {
        all.insert(
            (*type_url).to_owned(),
            json!({"sent": "v1", "acked": "v1", "nacked": null}),
        );
    }
    Value::Object(all)
}

/// The controller's `/debug/syncz` with every proxy of [`healthy`] connected and synced.
fn syncz_all_synced() -> Value {
    json!({
        "versions": {(ADDRESS): "v1", (AUTHORIZATION): "v1", (WAYPOINT): "v1"},
        "clients": [
            client("ztunnel~172.18.0.2~ztunnel-aaaaa.istio-system~istio-system.svc.cluster.local",
                   synced(&[ADDRESS, AUTHORIZATION])),
            client("ztunnel~172.18.0.3~ztunnel-bbbbb.istio-system~istio-system.svc.cluster.local",
                   synced(&[ADDRESS, AUTHORIZATION])),
            client("router~10.244.1.4~waypoint-5d8f-xk2p.shop~shop.svc.cluster.local",
                   synced(&[ADDRESS, AUTHORIZATION, WAYPOINT])),
        ]
    })
}

/// A cluster where the mesh is installed and works: two nodes with a ztunnel each, one
/// waypoint, the controller ready and every proxy synced.
fn healthy() -> Routes {
    let ztunnel =
        |name: &str, node: &str| ready_pod("istio-system", name, node, json!({"app": "ztunnel"}));
    let gateway = json!({
        "metadata": metadata("shop", "waypoint"),
        "spec": {"gatewayClassName": "istio-waypoint",
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
        "status": {"conditions": [{"type": "Accepted", "status": "True"},
                                  {"type": "Programmed", "status": "True"}]},
    });
    let waypoint_pod = ready_pod(
        "shop",
        "waypoint-5d8f-xk2p",
        "node2",
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint"}),
    );
    let available = json!({"spec": {"replicas": 1}, "status": {"readyReplicas": 1}});
    let namespace = |name: &str| json!({"metadata": {"name": name, "resourceVersion": "1"}});
    Routes::new()
        .json(
            "/version",
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}),
        )
        .json(CRDS, list("CustomResourceDefinition", healthy_crds()))
        .json(
            "/apis/apps/v1/namespaces/istio-system/deployments/controller",
            available.clone(),
        )
        .reply(
            &format!("{ADMIN}/ready"),
            Reply::Text(200, "ready\n".into()),
        )
        .json(&format!("{ADMIN}/debug/syncz"), syncz_all_synced())
        .json(ROOT_CONFIGMAP, root_config_map(365 * DAY))
        .json(
            ZTUNNEL_DS,
            json!({"status": {"numberReady": 2, "desiredNumberScheduled": 2}}),
        )
        .json(
            "/api/v1/nodes",
            list("Node", vec![namespace("node1"), namespace("node2")]),
        )
        .json(
            "/api/v1/namespaces/istio-system/pods",
            list(
                "Pod",
                vec![
                    ztunnel("ztunnel-aaaaa", "node1"),
                    ztunnel("ztunnel-bbbbb", "node2"),
                ],
            ),
        )
        .json(
            "/apis/gateway.networking.k8s.io/v1/gateways",
            list("Gateway", vec![gateway]),
        )
        .json(
            "/apis/apps/v1/namespaces/shop/deployments/waypoint",
            available,
        )
        .json(
            "/api/v1/namespaces/shop/pods",
            list("Pod", vec![waypoint_pod.clone()]),
        )
        .json(
            "/api/v1/namespaces",
            list(
                "Namespace",
                vec![namespace("shop"), namespace("istio-system")],
            ),
        )
        .json("/api/v1/pods", list("Pod", vec![waypoint_pod]))
        .json(
            "/api/v1/services",
            list(
                "Service",
                vec![json!({"metadata": metadata("shop", "waypoint"),
                            "spec": {"clusterIP": "10.96.0.12",
                                     "ports": [{"name": "mesh", "port": 15008}]}})],
            ),
        )
}

/// The fake serving `routes`, and a folder with its kubeconfig.
struct Cluster {
    fake: FakeKube,
    dir: TempDir,
}

impl Cluster {
    fn serve(routes: Routes) -> Self {
        let fake = FakeKube::routes(routes);
        let dir = TempDir::new("meshctl-kube-mode");
        fake.kubeconfig(dir.path());
        Self { fake, dir }
    }

    /// `meshctl --kubeconfig <its kubeconfig> ARGS`.
    fn meshctl(&self, args: &[&str]) -> Run {
        let kubeconfig = self.dir.join("kubeconfig");
        let mut command = self.command();
        command.arg("--kubeconfig").arg(kubeconfig).args(args);
        Run::of(command.output().expect("meshctl runs"))
    }

    /// `meshctl` with nothing of the environment choosing a cluster or a sandbox.
    fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"));
        command
            .env_remove("KUBECONFIG")
            .env_remove("MESHCTL_KUBE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", self.dir.path());
        command
    }

    /// The paths the fake was asked for.
    fn paths(&self) -> Vec<String> {
        self.fake.seen().into_iter().map(|r| r.path).collect()
    }
}

/// What a run of meshctl left.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The line of stdout (trimmed) starting with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{self:?}"))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

#[test]
fn check_passes_on_a_healthy_cluster_reaching_the_controller_through_the_service_proxy() {
    let cluster = Cluster::serve(healthy());
    let run = cluster.meshctl(&["check"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let api = format!(
        "✔ the API server at {}/ answers: Kubernetes v1.32.0",
        cluster.fake.url()
    );
    assert_eq!(run.line("✔ the API server"), api);
    for line in [
        "✔ the 7 CRDs of the mesh are installed",
        "✔ the 3 CRDs of the Gateway API are installed",
        "✔ the controller Deployment is available (1/1 ready)",
        "✔ the controller is ready",
        "✔ the ztunnel DaemonSet is ready on all 2 nodes",
        "✔ every node (2) runs a ready ztunnel",
        "✔ the waypoint shop/waypoint is programmed and available",
        "✔ all 3 proxies are connected and synced",
        "✔ all 11 checks passed",
    ] {
        assert_eq!(run.line(line), line);
    }
    assert!(
        run.line("✔ the CA root certificate is valid for ")
            .ends_with(" more days")
    );
    assert!(
        run.line("✔ the mesh acts on all ")
            .ends_with(" objects it reads")
    );
    let paths = cluster.paths();
    for proxied in [format!("{ADMIN}/ready"), format!("{ADMIN}/debug/syncz")] {
        assert!(paths.contains(&proxied), "{proxied} not asked: {paths:?}");
    }

    let run = cluster.meshctl(&["check", "-o", "json"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        (report["errors"].as_u64(), report["warnings"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["checks"][0]["group"], "kubernetes API");
}

/// Runs `check` against [`healthy`] changed by `change`; returns the run.
fn check_with(change: impl FnOnce(Routes) -> Routes) -> Run {
    Cluster::serve(change(healthy())).meshctl(&["check"])
}

#[test]
fn check_fails_when_the_ztunnel_daemonset_has_fewer_ready_than_desired() {
    let run = check_with(|routes| {
        routes.json(
            ZTUNNEL_DS,
            json!({"status": {"numberReady": 1, "desiredNumberScheduled": 2}}),
        )
    });
    assert_eq!(run.code, Some(1), "{run:?}");
    run.line("✘ the ztunnel DaemonSet has 1 ready of 2 desired");
    assert!(
        run.stdout
            .ends_with("\n1 errors, 0 warnings in 11 checks\n"),
        "{run:?}"
    );
}

#[test]
fn check_fails_naming_a_node_without_a_ztunnel() {
    let node = |name: &str| json!({"metadata": {"name": name}});
    let run = check_with(|routes| {
        let nodes = vec![node("node1"), node("node2"), node("node3")];
        routes.json("/api/v1/nodes", list("Node", nodes))
    });
    assert_eq!(run.code, Some(1), "{run:?}");
    run.line("✘ no ready ztunnel on node3: pods there have no mesh");
}

#[test]
fn check_fails_when_the_root_expires_in_five_days() {
    let run = check_with(|routes| routes.json(ROOT_CONFIGMAP, root_config_map(5 * DAY)));
    assert_eq!(run.code, Some(1), "{run:?}");
    run.line("✘ the CA root certificate expires in 4 days");
    assert!(
        run.line("hint: rotate the root:")
            .contains("Secret cacerts of istio-system")
    );
}

#[test]
fn check_warns_when_the_root_is_valid_for_30_days() {
    let run = check_with(|routes| routes.json(ROOT_CONFIGMAP, root_config_map(30 * DAY)));
    assert_eq!(run.code, Some(2), "{run:?}");
    run.line("⚠ the CA root certificate expires in 29 days");
    assert!(
        run.stdout
            .ends_with("\n0 errors, 1 warnings in 11 checks\n"),
        "{run:?}"
    );
}

#[test]
fn check_fails_naming_a_missing_crd() {
    let run = check_with(|routes| {
        let mut crds = healthy_crds();
        crds.retain(|crd| crd["metadata"]["name"] != "grpcroutes.gateway.networking.k8s.io");
        routes.json(CRDS, list("CustomResourceDefinition", crds))
    });
    assert_eq!(run.code, Some(1), "{run:?}");
    run.line("✘ CRDs of the Gateway API missing: grpcroutes.gateway.networking.k8s.io");
}

#[test]
fn check_pre_needs_only_a_recent_cluster_with_the_gateway_api() {
    // Before install: no mesh CRDs, no controller; the Gateway API's CRDs are there.
    let gateway_only = |routes: Routes| {
        let mut crds = healthy_crds();
        crds.retain(|crd| {
            crd["metadata"]["name"]
                .as_str()
                .is_some_and(|name| name.ends_with(".gateway.networking.k8s.io"))
        });
        routes.json(CRDS, list("CustomResourceDefinition", crds))
    };
    let cluster = Cluster::serve(gateway_only(Routes::new().json(
        "/version",
        json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}),
    )));
    let run = cluster.meshctl(&["check", "--pre"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    for line in [
        "✔ Kubernetes 1.32 is 1.28 or later",
        "✔ the 3 CRDs of the Gateway API are installed",
        "✔ all 3 checks passed",
    ] {
        assert_eq!(run.line(line), line);
    }

    let old = Cluster::serve(gateway_only(Routes::new().json(
        "/version",
        json!({"major": "1", "minor": "27+", "gitVersion": "v1.27.3-eks"}),
    )));
    let run = old.meshctl(&["check", "--pre"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    run.line("✘ Kubernetes 1.27 is older than 1.28");

    let bare = Cluster::serve(
        Routes::new()
            .json(
                "/version",
                json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0"}),
            )
            .json(CRDS, list("CustomResourceDefinition", Vec::new())),
    );
    let run = bare.meshctl(&["check", "--pre"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.line("✘ CRDs of the Gateway API missing: ")
            .contains("httproutes")
    );
}

/// The CRDs the mesh needs, all of which [`healthy`] serves.
fn healthy_crds() -> Vec<Value> {
    [
        "authorizationpolicies.security.istio.io",
        "peerauthentications.security.istio.io",
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "envoyfilters.networking.istio.io",
        "trafficsplits.split.smi-spec.io",
        "serviceprofiles.linkerd.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
    ]
    .iter()
    .map(|name| json!({"metadata": {"name": name}}))
    .collect()
}

#[test]
fn check_fails_when_the_controller_answers_503_to_ready() {
    let run = check_with(|routes| {
        routes.reply(
            &format!("{ADMIN}/ready"),
            Reply::Text(503, "xDS snapshot not built yet".into()),
        )
    });
    assert_eq!(run.code, Some(1), "{run:?}");
    run.line(
        "✘ the controller is not ready: /ready of istio-system/istiod answered 503: xDS \
         snapshot not built yet",
    );
}

#[test]
fn analyze_reports_an_object_of_a_kind_the_mesh_does_not_read_served_by_the_cluster() {
    let telemetry = json!({"metadata": metadata("shop", "metrics"),
                           "spec": {"metrics": [{"providers": [{"name": "prometheus"}]}]}});
    let cluster = Cluster::serve(healthy().json(
        "/apis/telemetry.istio.io/v1/telemetries",
        list("Telemetry", vec![telemetry]),
    ));
    let run = cluster.meshctl(&["analyze"]);
    // A warning: the object has no effect, which loses a feature only.
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stderr,
        "kubernetes:Telemetry/shop/metrics: Telemetry shop/metrics: warning: Telemetry \
         (telemetry.istio.io) is not read: telemetry settings are not read: metrics and access \
         logs keep their defaults\n"
    );
    let paths = cluster.paths();
    for listed in [
        "/apis/security.istio.io/v1/authorizationpolicies",
        "/api/v1/pods",
    ] {
        assert!(
            paths.iter().any(|p| p == listed),
            "{listed} not listed: {paths:?}"
        );
    }
}

#[test]
fn analyze_reports_a_bad_object_of_a_file_over_the_clusters_version_naming_file_and_field() {
    let good = json!({"metadata": metadata("shop", "deny-all"), "spec": {"action": "DENY"}});
    let cluster = Cluster::serve(healthy().json(
        "/apis/security.istio.io/v1/authorizationpolicies",
        list("AuthorizationPolicy", vec![good]),
    ));
    let clean = cluster.meshctl(&["analyze"]);
    assert_eq!(clean.code, Some(0), "{clean:?}");
    assert!(
        clean.stdout.starts_with("no problems found in "),
        "{clean:?}"
    );
    let file = cluster.dir.write(
        "policy.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: deny-all, namespace: shop}\nspec: {action: REFUSE}\n",
    );
    let file = file.to_str().expect("a UTF-8 path");
    let run = cluster.meshctl(&["analyze", "-f", file]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let expected = format!("error: {file}: AuthorizationPolicy shop/deny-all: field spec.action: ");
    assert!(run.stderr.starts_with(&expected), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");

    let json = cluster.meshctl(&["analyze", "-f", file, "-o", "json"]);
    assert_eq!(json.code, Some(1), "{json:?}");
    let found: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(found.as_array().map(Vec::len), Some(1));
    assert_eq!(found[0]["error"], true);
}

#[test]
fn proxy_status_shows_a_stale_and_a_nacked_proxy() {
    let mut syncz = syncz_all_synced();
    syncz["clients"][1]["types"][AUTHORIZATION]["acked"] = json!("v0");
    syncz["clients"][2]["types"][WAYPOINT] =
        json!({"sent": "v1", "acked": null, "nacked": "route shop/r: unknown filter"});
    let cluster = Cluster::serve(healthy().json(&format!("{ADMIN}/debug/syncz"), syncz));
    let run = cluster.meshctl(&["proxy-status"]);
    assert_eq!(run.code, Some(1), "{run:?}");
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "NAME",
                "CONNECTED",
                "ADDRESSES",
                "AUTHORIZATION",
                "WAYPOINT",
                "CERT_EXPIRES"
            ],
            vec!["ztunnel", "node1", "yes", "SYNCED", "SYNCED", "-", "-"],
            vec!["ztunnel", "node2", "yes", "SYNCED", "STALE", "-", "-"],
            vec![
                "waypoint",
                "shop/waypoint-5d8f-xk2p",
                "yes",
                "SYNCED",
                "SYNCED",
                "NACK:",
                "route",
                "shop/r:",
                "unknown",
                "filter",
                "-"
            ],
        ]
    );
    assert!(cluster.paths().contains(&format!("{ADMIN}/debug/syncz")));

    let json = cluster.meshctl(&["proxy-status", "-o", "json"]);
    assert_eq!(json.code, Some(1), "{json:?}");
    let statuses: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(statuses[1]["types"][1], "STALE");
    assert_eq!(
        statuses[2]["types"][2],
        "NACK: route shop/r: unknown filter"
    );

    let check = cluster.meshctl(&["check"]);
    assert_eq!(check.code, Some(1), "{check:?}");
    check.line("⚠ ztunnel node2 has not acknowledged the current config yet");
    check.line("✘ waypoint shop/waypoint-5d8f-xk2p refused its config: NACK: route shop/r");
}

#[test]
fn sandbox_verbs_refuse_in_kubernetes_mode_without_asking_the_cluster() {
    let cluster = Cluster::serve(healthy());
    for (args, verb) in [
        (&["stat", "deploy"][..], "stat"),
        (
            &["proxy-config", "certs", "ztunnel", "node1"][..],
            "proxy-config",
        ),
        (&["get", "pods"][..], "get"),
    ] {
        let run = cluster.meshctl(args);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(
            run.stderr,
            format!(
                "error: `{verb}` works on the sandbox only for now; in Kubernetes mode \
                 (--kubeconfig, --context or MESHCTL_KUBE=1) meshctl has check, analyze, \
                 proxy-status and stat --prometheus\n"
            )
        );
    }
    assert_eq!(cluster.paths(), Vec::<String>::new());
}

#[test]
fn kubeconfig_from_the_environment_and_the_context_flag_select_the_cluster() {
    let cluster = Cluster::serve(healthy());
    let kubeconfig = cluster.dir.join("kubeconfig");
    let run = |extra: &[&str], kube_mode: bool| {
        let mut command = cluster.command();
        command.env("KUBECONFIG", &kubeconfig);
        if kube_mode {
            command.env("MESHCTL_KUBE", "1");
        }
        Run::of(command.args(extra).output().expect("meshctl runs"))
    };
    let by_env = run(&["proxy-status"], true);
    assert_eq!(by_env.code, Some(0), "{by_env:?}");
    by_env.line("ztunnel node1");
    // The other context's server is a closed port.
    let other = run(&["check", "--context", "other"], false);
    assert_eq!(other.code, Some(1), "{other:?}");
    assert!(
        other
            .line("✘ the API server at http://127.0.0.1:1/ cannot be reached: GET /version: ")
            .contains("Connect"),
        "{other:?}"
    );
    assert_eq!(
        other
            .stdout
            .lines()
            .filter(|l| l.contains('✘') || l.contains('✔'))
            .count(),
        1
    );
}

/// `%XX` decoded: a query's value as Prometheus reads it.
fn percent_decoded(text: &str) -> String {
    let mut out = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = tail
            .get(..2)
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (byte, escaped) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                rest = &tail[2..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake Prometheus: 50 requests to shop/orders in the window, 45 of them not 5xx, a median
/// of 2.5 ms; nothing else has series.
fn fake_prometheus() -> FakeKube {
    FakeKube::serve(|request| {
        let query = percent_decoded(request.query.strip_prefix("query=").unwrap_or_default());
        let orders = |value: &str| {
            json!([{"metric": {"destination_workload": "orders",
                               "destination_workload_namespace": "shop"},
                    "value": [1765070000.5, value]}])
        };
        let requests = "sum by (destination_workload, destination_workload_namespace) \
                        (increase(istio_requests_total{";
        if request.path != "/api/v1/query" {
            return Reply::Text(404, "404 page not found\n".into());
        }
        let result = if query.starts_with(requests) && query.contains("response_code!~\"5.*\"") {
            orders("45")
        } else if query.starts_with(requests) {
            orders("50")
        } else if query.starts_with("histogram_quantile(0.5,") {
            orders("2.5")
        } else {
            json!([])
        };
        Reply::Json(
            200,
            json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
        )
    })
}

/// The shop's namespace (enrolled), its Deployments and Service, and their pods, one of them
/// out of the mesh by its own label.
fn shop() -> Routes {
    let deployment = |name: &str| {
        json!({"metadata": metadata("shop", name),
               "spec": {"selector": {"matchLabels": {"app": name}}}})
    };
    let pod = |name: &str, labels: Value| ready_pod("shop", name, "node1", labels);
    Routes::new()
        .json(
            "/api/v1/namespaces",
            list(
                "Namespace",
                vec![json!({"metadata": {"name": "shop",
                                         "labels": {"istio.io/dataplane-mode": "ambient"}}})],
            ),
        )
        .json(
            "/apis/apps/v1/deployments",
            list(
                "Deployment",
                vec![deployment("orders"), deployment("cache")],
            ),
        )
        .json("/api/v1/services", list("Service", vec![]))
        .json(
            "/api/v1/pods",
            list(
                "Pod",
                vec![
                    pod("orders-5d8f-aaaaa", json!({"app": "orders"})),
                    pod(
                        "orders-5d8f-bbbbb",
                        json!({"app": "orders", "istio.io/dataplane-mode": "none"}),
                    ),
                    pod("cache-77c4-ccccc", json!({"app": "cache"})),
                ],
            ),
        )
}

#[test]
fn stat_with_prometheus_takes_rows_from_the_cluster_and_figures_from_prometheus() {
    let cluster = Cluster::serve(shop());
    let prometheus = fake_prometheus();
    let url = prometheus.url();
    let run = cluster.meshctl(&[
        "stat",
        "deploy",
        "-n",
        "shop",
        "--prometheus",
        &url,
        "-o",
        "json",
    ]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let rows = report["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["cache", "orders"]);
    let (cache, orders) = (&rows[0], &rows[1]);
    assert_eq!(
        (&orders["meshed_pods"], &orders["pods"], &orders["requests"]),
        (&json!(1), &json!(2), &json!(50))
    );
    assert_eq!(orders["success_rate"], 0.9);
    assert_eq!(orders["latency_ms_p50"], 2.5);
    assert_eq!(orders["requests_per_second"], 50.0 / 30.0);
    assert_eq!(
        (&cache["meshed_pods"], &cache["pods"]),
        (&json!(1), &json!(1))
    );
    assert!(cache["requests"].is_null(), "{cache}");
    let queries: Vec<String> = prometheus
        .seen()
        .into_iter()
        .map(|r| percent_decoded(&r.query))
        .collect();
    assert_eq!(queries.len(), 11, "{queries:#?}");
    assert!(
        queries
            .iter()
            .all(|q| q.contains("destination_workload_namespace=\"shop\"")),
        "{queries:#?}"
    );

    let refused = cluster.meshctl(&["stat", "deploy", "--prometheus", "https://prometheus:9090"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.starts_with(
            "error: --prometheus https://prometheus:9090: https:// is not supported, only http://"
        ),
        "{refused:?}"
    );
}
