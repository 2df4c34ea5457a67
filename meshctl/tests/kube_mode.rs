//! meshctl's Kubernetes mode against a fake API server: the built binary, pointed at it with
//! `--kubeconfig`, checks, analyzes and shows proxy status from what the fake serves; the
//! requests the fake received show how it got there. `stat`, `edges` and `routes` are in
//! `kube_stat.rs`.

mod kube_cluster;

use kube_cluster::*;
use serde_json::{Value, json};
use test_support::fake_kube::{Reply, Routes, list};

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
        "✔ the 14 CRDs of the mesh are installed",
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
    let sidecar = json!({"metadata": metadata("shop", "default"),
                         "spec": {"egress": [{"hosts": ["./*"]}]}});
    let cluster = Cluster::serve(healthy().json(
        "/apis/networking.istio.io/v1/sidecars",
        list("Sidecar", vec![sidecar]),
    ));
    let run = cluster.meshctl(&["analyze"]);
    // A warning: the object has no effect, which loses a feature only.
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stderr,
        "kubernetes:Sidecar/shop/default: Sidecar shop/default: warning: Sidecar \
         (networking.istio.io) is not read: it configures sidecars, and ambient proxies have \
         none: it has no effect\n"
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
                "TRUST_BUNDLE",
                "ACCESS_LOG",
                "CERT_EXPIRES"
            ],
            vec![
                "ztunnel", "node1", "yes", "SYNCED", "SYNCED", "-", "-", "-", "-"
            ],
            vec![
                "ztunnel", "node2", "yes", "SYNCED", "STALE", "-", "-", "-", "-"
            ],
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
                "-",
                "-",
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
    let admin_port = " (it reads the proxies' admin port, which listens on their pods' \
                      loopback only, out of the API server's reach)";
    for (args, verb, why) in [
        (&["tap", "deploy/orders"][..], "tap", admin_port),
        (&["top", "deploy/orders"][..], "top", admin_port),
        (
            &["proxy-config", "certs", "ztunnel", "node1"][..],
            "proxy-config",
            admin_port,
        ),
        (&["get", "pods"][..], "get", ""),
    ] {
        let run = cluster.meshctl(args);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(
            run.stderr,
            format!(
                "error: `{verb}` works on the sandbox only{why}; in Kubernetes mode \
                 (--kubeconfig, --context or MESHCTL_KUBE=1) meshctl has check, analyze, \
                 proxy-status, stat, edges, routes, dashboard and ca\n"
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
