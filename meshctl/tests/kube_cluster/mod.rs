//! What the tests of meshctl's Kubernetes mode share: a fake API server serving a healthy
//! cluster (two nodes with a ztunnel each, one waypoint, the controller ready, every proxy
//! synced), the built binary run against it, and what a run left.
#![allow(dead_code)]

pub mod shop;

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use test_support::TempDir;
use test_support::fake_kube::{FakeKube, Reply, Request, Routes, list};

pub const DAY: Duration = Duration::from_secs(24 * 3600);
pub const ADMIN: &str = "/api/v1/namespaces/istio-system/services/istiod:15014/proxy";
pub const ZTUNNEL_DS: &str = "/apis/apps/v1/namespaces/istio-system/daemonsets/ztunnel";
pub const ROOT_CONFIGMAP: &str = "/api/v1/namespaces/istio-system/configmaps/istio-ca-root-cert";
pub const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
pub const ADDRESS: &str = "type.googleapis.com/istio.workload.Address";
pub const AUTHORIZATION: &str = "type.googleapis.com/istio.security.Authorization";
pub const WAYPOINT: &str = "type.googleapis.com/mesh.waypoint.v1.Waypoint";

pub fn metadata(namespace: &str, name: &str) -> Value {
    json!({"name": name, "namespace": namespace, "resourceVersion": "1"})
}

pub fn ready_pod(namespace: &str, name: &str, node: &str, labels: Value) -> Value {
    let mut meta = metadata(namespace, name);
    meta["labels"] = labels;
    json!({"metadata": meta, "spec": {"nodeName": node, "serviceAccountName": "default"},
           "status": {"phase": "Running", "podIP": "10.244.0.9",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

pub fn root_config_map(valid_for: Duration) -> Value {
    let root = hbone::Authority::generate_root("cluster.local", valid_for).expect("a root");
    json!({"metadata": metadata("istio-system", "istio-ca-root-cert"),
           "data": {"root-cert.pem": root.root_pem()}})
}

pub fn client(node: &str, types: Value) -> Value {
    json!({"node": node, "identity": "spiffe://cluster.local/ns/istio-system/sa/ztunnel",
           "connected_at": 1, "types": types})
}

pub fn synced(types: &[&str]) -> Value {
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
pub fn syncz_all_synced() -> Value {
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
pub fn healthy() -> Routes {
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
pub struct Cluster {
    pub fake: FakeKube,
    pub dir: TempDir,
}

impl Cluster {
    pub fn serve(routes: Routes) -> Self {
        let fake = FakeKube::routes(routes);
        let dir = TempDir::new("meshctl-kube-mode");
        fake.kubeconfig(dir.path());
        Self { fake, dir }
    }

    /// A fake answering every request with `answer` (writes too).
    pub fn serve_with(answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        let fake = FakeKube::serve(answer);
        let dir = TempDir::new("meshctl-kube-mode");
        fake.kubeconfig(dir.path());
        Self { fake, dir }
    }

    /// `meshctl --kubeconfig <its kubeconfig> ARGS`.
    pub fn meshctl(&self, args: &[&str]) -> Run {
        let kubeconfig = self.dir.join("kubeconfig");
        let mut command = self.command();
        command.arg("--kubeconfig").arg(kubeconfig).args(args);
        Run::of(command.output().expect("meshctl runs"))
    }

    /// `meshctl` with nothing of the environment choosing a cluster or a sandbox.
    pub fn command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_meshctl"));
        command
            .env_remove("KUBECONFIG")
            .env_remove("MESHCTL_KUBE")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", self.dir.path());
        command
    }

    /// The paths the fake was asked for.
    pub fn paths(&self) -> Vec<String> {
        self.fake.seen().into_iter().map(|r| r.path).collect()
    }
}

/// What a run of meshctl left.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The line of stdout (trimmed) starting with `prefix`.
    pub fn line(&self, prefix: &str) -> &str {
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

/// The CRDs the mesh needs, all of which [`healthy`] serves.
pub fn healthy_crds() -> Vec<Value> {
    [
        "authorizationpolicies.security.istio.io",
        "peerauthentications.security.istio.io",
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "envoyfilters.networking.istio.io",
        "trafficsplits.split.smi-spec.io",
        "serviceprofiles.linkerd.io",
        "servers.policy.linkerd.io",
        "authorizationpolicies.policy.linkerd.io",
        "meshtlsauthentications.policy.linkerd.io",
        "networkauthentications.policy.linkerd.io",
        "httplocalratelimitpolicies.policy.linkerd.io",
        "httproutes.policy.linkerd.io",
        "telemetries.telemetry.istio.io",
        "gateways.gateway.networking.k8s.io",
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
    ]
    .iter()
    .map(|name| json!({"metadata": {"name": name}}))
    .collect()
}
