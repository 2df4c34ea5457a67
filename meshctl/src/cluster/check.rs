//! `meshctl check` against a Kubernetes cluster, grouped as `linkerd check` groups it: the API
//! server, the CRDs, the control plane and its CA root, the ztunnels, the waypoints, every
//! proxy's sync, and what the controller makes of the objects it reads. The checks are the
//! shared model's ([`crate::operator::check`]); this gathers their facts from the API server.

use std::time::SystemTime;

use serde_json::Value;

use super::analyze;
use super::api::{ApiServer, SYSTEM_NAMESPACE};
use super::kinds::required_crds;
use super::proxies::{
    self, CONTROLLER_DEPLOYMENT, CONTROLLER_SERVICE, ZTUNNEL_DAEMONSET, controller_get,
};
use super::workloads::{
    daemonset_pods, deployment_replicas, name, namespace, nodes_without, programmed,
};
use crate::operator::check::{
    self as model, CONTROL_PLANE, Check, NODE_PROXIES, Status, WAYPOINTS, root_check, root_validity,
};

const KUBERNETES_API: &str = "kubernetes API";
const DEFINITIONS: &str = "resource definitions";
const PROXY_SYNC: &str = "proxy sync";

/// The CRDs, in every API version they are served at.
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// How to replace the root where the controller reads it.
const ROTATE: &str = "rotate the root: put the new CA in the Secret cacerts of istio-system \
                      (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem) and \
                      `kubectl -n istio-system rollout restart deployment controller`";
const CONTROLLER_LOGS: &str = "see `kubectl -n istio-system logs deployment/controller`";

/// Runs every check, in the order they are shown; stops after the first group when the API
/// server cannot be reached.
pub async fn run(api: &ApiServer) -> Vec<Check> {
    let (reached, answer) = api_server(api).await;
    let mut checks = vec![reached];
    if answer.is_none() {
        return checks;
    }
    checks.extend(definitions(api, true).await);
    checks.extend(control_plane(api).await);
    checks.extend(node_proxies(api).await);
    checks.extend(waypoints(api).await);
    checks.extend(proxy_sync(api).await);
    checks.extend(configuration(api).await);
    checks
}

/// Whether the API server answers, and its `/version` answer when it does.
async fn api_server(api: &ApiServer) -> (Check, Option<Value>) {
    match api.get_json("/version").await {
        Ok(version) => {
            let check = Check::ok(
                KUBERNETES_API,
                format!(
                    "the API server at {} answers: Kubernetes {}",
                    api.url,
                    version["gitVersion"]
                        .as_str()
                        .unwrap_or("of unknown version")
                ),
            );
            (check, Some(version))
        }
        Err(e) => {
            let check = Check::failed(
                KUBERNETES_API,
                Status::Error,
                format!("the API server at {} cannot be reached: {e}", api.url),
                "check --kubeconfig and --context, and that the cluster is up (`kubectl version`)",
            );
            (check, None)
        }
    }
}

/// The Kubernetes version the mesh needs at least, as (major, minor).
const MINIMUM_VERSION: (u64, u64) = (1, 28);

/// `check --pre`: whether the mesh can be installed: the API server and its version, and the
/// Gateway API CRDs the mesh builds on.
pub async fn pre(api: &ApiServer) -> Vec<Check> {
    let (reached, answer) = api_server(api).await;
    let Some(answer) = answer else {
        return vec![reached];
    };
    let mut checks = vec![reached, version(&answer)];
    checks.extend(definitions(api, false).await);
    checks
}

/// Whether the version the API server gave (`/version`) is recent enough.
fn version(answer: &Value) -> Check {
    let number = |v: &Value| -> Option<u64> {
        // Some distributions say "28+".
        v.as_str()?.trim_end_matches('+').parse().ok()
    };
    let found = number(&answer["major"]).zip(number(&answer["minor"]));
    let (major, minor) = MINIMUM_VERSION;
    match found {
        Some(found) if found >= MINIMUM_VERSION => Check::ok(
            KUBERNETES_API,
            format!(
                "Kubernetes {}.{} is {major}.{minor} or later",
                found.0, found.1
            ),
        ),
        Some(found) => Check::failed(
            KUBERNETES_API,
            Status::Error,
            format!(
                "Kubernetes {}.{} is older than {major}.{minor}",
                found.0, found.1
            ),
            "upgrade the cluster: ambient capture needs the pod and Gateway API features of \
             recent releases",
        ),
        None => Check::failed(
            KUBERNETES_API,
            Status::Warning,
            "the API server's version cannot be read",
            format!("make sure the cluster runs Kubernetes {major}.{minor} or later"),
        ),
    }
}

/// The CRDs the mesh reads, when `mesh` (after install), and those of the Gateway API.
async fn definitions(api: &ApiServer, mesh: bool) -> Vec<Check> {
    let crds = match api.list(CRDS).await {
        Ok(crds) => crds.unwrap_or_default(),
        Err(e) => {
            let hint = "meshctl needs to list customresourcedefinitions";
            return vec![Check::failed(
                DEFINITIONS,
                Status::Error,
                e.to_string(),
                hint,
            )];
        }
    };
    let installed: Vec<&str> = crds.iter().map(name).collect();
    let (mesh_crds, gateway) = required_crds();
    let check = |what: &str, wanted: &[String], hint: &str| {
        let missing: Vec<&str> = wanted
            .iter()
            .map(String::as_str)
            .filter(|crd| !installed.contains(crd))
            .collect();
        if missing.is_empty() {
            Check::ok(
                DEFINITIONS,
                format!("the {} CRDs of {what} are installed", wanted.len()),
            )
        } else {
            let message = format!("CRDs of {what} missing: {}", missing.join(", "));
            Check::failed(DEFINITIONS, Status::Error, message, hint)
        }
    };
    let mut checks = Vec::new();
    if mesh {
        checks.push(check(
            "the mesh",
            &mesh_crds,
            "`kubectl apply -f manifests/crds/`: objects of a missing kind are not read",
        ));
    }
    checks.push(check(
        "the Gateway API",
        &gateway,
        "install the Gateway API's standard CRDs (v1.1 or later): without them there \
         are no waypoints or routes",
    ));
    checks
}

async fn control_plane(api: &ApiServer) -> Vec<Check> {
    let path =
        format!("/apis/apps/v1/namespaces/{SYSTEM_NAMESPACE}/deployments/{CONTROLLER_DEPLOYMENT}");
    let deployment = match api.object(&path).await {
        Ok(Some(deployment)) => deployment_check(&deployment),
        Ok(None) => Check::failed(
            CONTROL_PLANE,
            Status::Error,
            format!("the Deployment {SYSTEM_NAMESPACE}/{CONTROLLER_DEPLOYMENT} does not exist"),
            "install the control plane: `kubectl apply -f manifests/controller.yaml`",
        ),
        Err(e) => Check::failed(CONTROL_PLANE, Status::Error, e.to_string(), CONTROLLER_LOGS),
    };
    let ready = match controller_get(api, "/ready").await {
        Ok(answer) if answer.status == 200 => Check::ok(CONTROL_PLANE, "the controller is ready"),
        Ok(answer) => Check::failed(
            CONTROL_PLANE,
            Status::Error,
            format!(
                "the controller is not ready: /ready of {SYSTEM_NAMESPACE}/{CONTROLLER_SERVICE} \
                 answered {}: {}",
                answer.status,
                answer.text()
            ),
            CONTROLLER_LOGS,
        ),
        Err(e) => Check::failed(CONTROL_PLANE, Status::Error, e.to_string(), CONTROLLER_LOGS),
    };
    vec![deployment, ready, root(api).await]
}

fn deployment_check(deployment: &Value) -> Check {
    match deployment_replicas(deployment) {
        (ready, wanted) if ready >= 1 => Check::ok(
            CONTROL_PLANE,
            format!("the controller Deployment is available ({ready}/{wanted} ready)"),
        ),
        (_, wanted) => Check::failed(
            CONTROL_PLANE,
            Status::Error,
            format!("the controller Deployment has no ready replica (0/{wanted})"),
            "see `kubectl -n istio-system describe deployment controller` and its logs",
        ),
    }
}

/// The root the controller publishes for the node proxies, in the root namespace's
/// ConfigMap.
async fn root(api: &ApiServer) -> Check {
    match root_pem(api).await.and_then(|pem| root_validity(&pem)) {
        Ok((not_before, not_after)) => root_check(SystemTime::now(), not_before, not_after, ROTATE),
        Err(message) => Check::failed(
            CONTROL_PLANE,
            Status::Error,
            message,
            format!("the controller publishes it once its CA is up: {CONTROLLER_LOGS}"),
        ),
    }
}

/// The CA root (PEM) the controller publishes for the node proxies, from the root
/// namespace's ConfigMap, or why it cannot be read.
pub async fn root_pem(api: &ApiServer) -> std::result::Result<String, String> {
    use controller::ca::secret_store::ROOT_CONFIGMAP;
    let path = format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/configmaps/{ROOT_CONFIGMAP}");
    match api.object(&path).await {
        Ok(Some(map)) => map["data"]["root-cert.pem"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the ConfigMap {ROOT_CONFIGMAP} has no root-cert.pem")),
        Ok(None) => Err(format!(
            "the ConfigMap {SYSTEM_NAMESPACE}/{ROOT_CONFIGMAP} (the CA root) does not exist"
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn node_proxies(api: &ApiServer) -> Vec<Check> {
    let hint = "see `kubectl -n istio-system get pods -l app=ztunnel -o wide` and \
                `kubectl -n istio-system logs daemonset/ztunnel`";
    let failed = |message: String| Check::failed(NODE_PROXIES, Status::Error, message, hint);
    let path =
        format!("/apis/apps/v1/namespaces/{SYSTEM_NAMESPACE}/daemonsets/{ZTUNNEL_DAEMONSET}");
    let daemonset = match api.object(&path).await {
        Ok(Some(daemonset)) => match daemonset_pods(&daemonset) {
            (ready, desired) if ready == desired && desired > 0 => Check::ok(
                NODE_PROXIES,
                format!("the ztunnel DaemonSet is ready on all {desired} nodes"),
            ),
            (ready, desired) => failed(format!(
                "the ztunnel DaemonSet has {ready} ready of {desired} desired"
            )),
        },
        Ok(None) => Check::failed(
            NODE_PROXIES,
            Status::Error,
            format!("the DaemonSet {SYSTEM_NAMESPACE}/{ZTUNNEL_DAEMONSET} does not exist"),
            "install it: `kubectl apply -f manifests/ztunnel-daemonset.yaml`",
        ),
        Err(e) => failed(e.to_string()),
    };
    let per_node = match (
        api.list("/api/v1/nodes").await,
        proxies::ztunnel_pods(api).await,
    ) {
        (Ok(nodes), Ok(pods)) => {
            let nodes = nodes.unwrap_or_default();
            match nodes_without(&nodes, &pods) {
                missing if missing.is_empty() => Check::ok(
                    NODE_PROXIES,
                    format!("every node ({}) runs a ready ztunnel", nodes.len()),
                ),
                missing => failed(format!(
                    "no ready ztunnel on {}: pods there have no mesh",
                    missing.join(", ")
                )),
            }
        }
        (Err(e), _) | (_, Err(e)) => failed(e.to_string()),
    };
    vec![daemonset, per_node]
}

async fn waypoints(api: &ApiServer) -> Vec<Check> {
    let gateways = match proxies::waypoint_gateways(api).await {
        Ok(gateways) => gateways,
        Err(e) => {
            let hint = "meshctl needs to list gateways.gateway.networking.k8s.io";
            return vec![Check::failed(WAYPOINTS, Status::Error, e.to_string(), hint)];
        }
    };
    let mut checks = Vec::new();
    for gateway in &gateways {
        let (ns, gw) = (namespace(gateway), name(gateway));
        let what = format!("the waypoint {ns}/{gw}");
        let hint = format!(
            "see `kubectl -n {ns} describe gateway {gw}` and `kubectl -n {ns} logs deployment/{gw}`"
        );
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{gw}");
        let available = match api.object(&path).await {
            Ok(Some(deployment)) => match deployment_replicas(&deployment) {
                (ready, _) if ready >= 1 => Ok(()),
                (_, wanted) => Err(format!("its Deployment has no ready replica (0/{wanted})")),
            },
            Ok(None) => Err("its Deployment does not exist".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        checks.push(match programmed(gateway).and(available) {
            Ok(()) => Check::ok(WAYPOINTS, format!("{what} is programmed and available")),
            Err(why) => Check::failed(WAYPOINTS, Status::Error, format!("{what}: {why}"), hint),
        });
    }
    checks
}

async fn proxy_sync(api: &ApiServer) -> Vec<Check> {
    let statuses = match proxies::statuses(api).await {
        Ok(statuses) => statuses,
        Err(e) => {
            return vec![Check::failed(
                PROXY_SYNC,
                Status::Error,
                e.to_string(),
                CONTROLLER_LOGS,
            )];
        }
    };
    let mut checks = Vec::new();
    for status in &statuses {
        let stale = status.types.iter().any(|t| t == "STALE");
        let message = if !status.connected {
            format!("{} is not connected to the controller", status.name)
        } else if let Some(nack) = status.types.iter().find(|t| t.starts_with("NACK")) {
            format!("{} refused its config: {nack}", status.name)
        } else if stale {
            format!(
                "{} has not acknowledged the current config yet",
                status.name
            )
        } else {
            continue;
        };
        let level = if status.failing() {
            Status::Error
        } else {
            Status::Warning
        };
        let hint = "see `meshctl proxy-status --kubeconfig …` and the proxy's logs";
        checks.push(Check::failed(PROXY_SYNC, level, message, hint));
    }
    if checks.is_empty() {
        let message = format!("all {} proxies are connected and synced", statuses.len());
        checks.push(Check::ok(PROXY_SYNC, message));
    }
    checks
}

async fn configuration(api: &ApiServer) -> Vec<Check> {
    let hint = "fix the object and `kubectl apply` it again, or `kubectl delete` it";
    match analyze::findings(api, &[]).await {
        Ok((found, objects)) => model::configuration(found, objects, hint),
        Err(e) => vec![Check::failed(
            model::CONFIGURATION,
            Status::Error,
            e.to_string(),
            "meshctl needs to list the kinds the controller reads",
        )],
    }
}
