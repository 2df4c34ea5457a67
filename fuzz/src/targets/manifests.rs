//! Manifests, the user's side of the mesh:
//!
//! - [`CONTROLLER`]: a file as the controller's file source reads it
//!   (`controller::model::parse_documents`), indexed and translated into everything it
//!   serves. Oracle: what the controller serves, the proxies accept — every `Address` and
//!   `Authorization` applies to ztunnel's state and every `Waypoint` compiles in the
//!   waypoint (the controller reports what it cannot translate instead of sending it);
//! - [`MESHCTL`]: a file as `meshctl apply` reads it (`meshctl::sandbox::manifest`), then
//!   the sandbox's plan of the pods it implies.

use controller::translate::waypoint_json;
use meshctl::sandbox::model::cluster::{Applied, Cluster};
use proxy_core::state::ProxyState;
use waypoint::engine::{Engine, Runtime};

use crate::mesh::{served, translate_manifests};
use crate::mutate::Shape;
use crate::target::Target;

/// Tokens of Kubernetes YAML worth splicing in.
const YAML_TOKENS: &[&[u8]] = &[
    b"---\n",
    b"apiVersion: v1\n",
    b"kind: ",
    b"metadata: {name: a, namespace: shop}\n",
    b"istio.io/use-waypoint: waypoint",
    b"istio.io/dataplane-mode: ambient",
    b"&anchor ",
    b"*anchor",
    b"<<: *anchor",
    b"[",
    b"{",
    b"!!binary ",
    b"~",
    b"1e400",
    b"-1",
    b"4294967296",
    b"9223372036854775808",
    b"0x7fffffff",
    b"replicas: ",
    b"weight: ",
    b"port: ",
    b"regex: \"(a+)+\"",
    b"\"\\uD800\"",
];

/// Files for the controller.
pub const CONTROLLER: Target = Target {
    name: "controller_manifests",
    run: controller_manifests,
    shape: Shape::Text,
    dictionary: YAML_TOKENS,
    max_len: 32 * 1024,
};

/// Files for `meshctl apply`.
pub const MESHCTL: Target = Target {
    name: "meshctl_manifests",
    run: meshctl_manifests,
    shape: Shape::Text,
    dictionary: YAML_TOKENS,
    max_len: 32 * 1024,
};

/// Reads, translates and hands what is served to the proxies.
pub fn controller_manifests(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let translation = translate_manifests("fuzz.yaml", &text);
    for problem in &translation.problems {
        let _ = problem.to_string();
    }
    let served = served(&translation);
    let state = ProxyState::new();
    for (name, address) in served.addresses {
        if let Err(e) = state.apply_address(&name, address) {
            panic!("ztunnel refuses the controller's Address {name}: {e}");
        }
    }
    for (name, policy) in served.authorizations {
        if let Err(e) = state.apply_authorization(&name, policy) {
            panic!("ztunnel refuses the controller's Authorization {name}: {e}");
        }
    }
    for (name, config) in served.waypoints {
        let _ = waypoint_json(&config).to_string();
        if let Err(e) = Engine::compile(&config, Runtime::new()) {
            panic!("the waypoint refuses the controller's config {name}: {e}");
        }
    }
}

/// Reads a file as `meshctl apply` does and plans its pods.
pub fn meshctl_manifests(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(objects) = meshctl::sandbox::model::manifest::parse_documents(&text, "fuzz.yaml") else {
        return;
    };
    let mut cluster = Cluster::new("fuzz", 2, 0);
    for object in objects {
        let _ = object.display();
        let _ = object.labels();
        cluster.objects.push(Applied { object, created: 0 });
    }
    let _ = cluster.used_cluster_ips();
    let _ = cluster.plan_pods();
}
