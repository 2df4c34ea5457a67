//! Enrollment, workloads and services, from `fixtures/enrollment.yaml`.

#[path = "translate_common.rs"]
mod common;

use api::workload::{NetworkAddress, Port, PortList, TunnelProtocol, WorkloadStatus, WorkloadType};
use common::*;
use controller::model::Object;
use controller::translate::{TranslateOptions, translate};

#[test]
fn deployment_pod_in_ambient_namespace() {
    let t = run(&["enrollment.yaml"]);
    let w = workload(&t, "shop", "frontend-7d9f8c6b5-x2k4p").expect("workload");
    assert_eq!(w.uid, "Kubernetes//Pod/shop/frontend-7d9f8c6b5-x2k4p");
    assert_eq!(w.name, "frontend-7d9f8c6b5-x2k4p");
    assert_eq!(w.namespace, "shop");
    assert_eq!(
        w.addresses,
        vec![
            vec![10, 244, 1, 5],
            "fd00:10:244:1::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec()
        ]
    );
    assert_eq!(w.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(w.service_account, "frontend");
    assert_eq!(w.node, "node1");
    assert_eq!(w.cluster_id, "Kubernetes");
    assert_eq!(w.workload_name, "frontend");
    assert_eq!(w.workload_type, WorkloadType::Pod as i32);
    assert_eq!(w.canonical_name, "frontend");
    assert_eq!(w.canonical_revision, "v2");
    assert_eq!(w.status, WorkloadStatus::Healthy as i32);
    assert!(w.waypoint.is_none());
    assert!(w.authorization_policies.is_empty());
    // Named target ports resolved from this pod's containers; a missing
    // targetPort means the service port.
    let ports = w
        .services
        .get("shop/frontend.shop.svc.cluster.local")
        .expect("selected by frontend");
    let port = |s, t| Port {
        service_port: s,
        target_port: t,
    };
    assert_eq!(
        *ports,
        PortList {
            ports: vec![
                port(80, 8080),
                port(9090, 9090),
                port(8081, 8081),
                port(7000, 7000)
            ]
        }
    );
    assert_eq!(
        w.services.len(),
        1,
        "the selector-less service selects nobody"
    );
}

#[test]
fn opt_out_opt_in_and_plain() {
    let t = run(&["enrollment.yaml"]);
    let batch = workload(&t, "shop", "batch").expect("opted-out pods are plain workloads");
    assert_eq!(batch.tunnel_protocol, TunnelProtocol::None as i32);
    assert_eq!(batch.service_account, "default");
    assert_eq!(batch.canonical_name, "batch");
    assert_eq!(batch.canonical_revision, "latest");
    assert_eq!(batch.workload_name, "batch");

    let db = workload(&t, "legacy", "db-0").expect("db");
    assert_eq!(db.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(db.workload_name, "db", "StatefulSet owner");
    assert_eq!(db.canonical_name, "database");
    assert_eq!(db.canonical_revision, "15.2");
    // Headless service still maps ports.
    assert_eq!(
        db.services["legacy/db.legacy.svc.cluster.local"].ports,
        vec![Port {
            service_port: 5432,
            target_port: 5432
        }]
    );

    let cron = workload(&t, "legacy", "cron").expect("cron");
    assert_eq!(cron.tunnel_protocol, TunnelProtocol::None as i32);
    assert_eq!(cron.canonical_name, "nightly");
    assert_eq!(cron.canonical_revision, "r7");
}

#[test]
fn pending_and_finished_pods() {
    let t = run(&["enrollment.yaml"]);
    let starting = workload(&t, "shop", "frontend-7d9f8c6b5-zz9qq").expect("pending with IP");
    assert_eq!(starting.status, WorkloadStatus::Unhealthy as i32);
    assert_eq!(starting.workload_name, "frontend", "from pod-template-hash");
    assert!(workload(&t, "shop", "pending-no-ip").is_none());
    assert!(workload(&t, "shop", "done").is_none());
    // Scheduled without IP: known by name and node, enrolled, unhealthy, no address.
    let scheduled = workload(&t, "shop", "scheduled-no-ip").expect("scheduled without IP");
    assert!(scheduled.addresses.is_empty());
    assert_eq!(scheduled.node, "node1");
    assert_eq!(scheduled.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(scheduled.status, WorkloadStatus::Unhealthy as i32);
    // 6 pods make workloads.
    let workloads = t
        .snapshot
        .of_type(api::ADDRESS_TYPE_URL)
        .filter(|(n, _)| n.starts_with("Kubernetes//Pod/"))
        .count();
    assert_eq!(workloads, 6);
}

#[test]
fn unresolvable_named_port_skipped_for_that_pod() {
    let t = run(&["enrollment.yaml"]);
    // The starting pod declares http-web but not metrics.
    let w = workload(&t, "shop", "frontend-7d9f8c6b5-zz9qq").unwrap();
    let ports = &w.services["shop/frontend.shop.svc.cluster.local"].ports;
    assert!(ports.iter().all(|p| p.service_port != 9090), "{ports:?}");
    assert_eq!(ports.len(), 3);
    let problems = problems_about(&t, "Service", "frontend");
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = problems[0];
    assert_eq!(p.field, "spec.ports[1].targetPort");
    assert!(p.message.contains("frontend-7d9f8c6b5-zz9qq"), "{p}");
    assert!(p.message.contains("\"metrics\""), "{p}");
    assert_eq!(p.origin, "fixtures/enrollment.yaml");
}

#[test]
fn services() {
    let t = run(&["enrollment.yaml"]);
    let s = service(&t, "shop", "frontend").expect("frontend");
    assert_eq!(s.name, "frontend");
    assert_eq!(s.namespace, "shop");
    assert_eq!(s.hostname, "frontend.shop.svc.cluster.local");
    assert_eq!(
        s.addresses,
        vec![
            NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 20]
            },
            NetworkAddress {
                network: String::new(),
                address: "fd00:96::20"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
                    .to_vec()
            }
        ]
    );
    let ports: Vec<(u32, u32)> = s
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    // Named target ports are 0 here: they differ per pod.
    assert_eq!(ports, vec![(80, 0), (9090, 0), (8081, 8081), (7000, 7000)]);
    assert!(s.subject_alt_names.is_empty());
    assert!(s.waypoint.is_none());

    let db = service(&t, "legacy", "db").expect("headless");
    assert!(db.addresses.is_empty());
    assert!(service(&t, "shop", "external").is_some());
    assert_eq!(
        t.snapshot.resources[api::ADDRESS_TYPE_URL].len(),
        6 + 3,
        "6 workloads and 3 services"
    );
}

#[test]
fn pods_on_node() {
    let index = index_of(&["enrollment.yaml"]);
    assert_eq!(
        index.pods_on_node("node2"),
        vec![
            ("legacy".to_string(), "db".to_string()),
            ("shop".to_string(), "default".to_string()),
            ("shop".to_string(), "frontend".to_string()),
        ]
    );
    assert!(index.pods_on_node("").is_empty());
}

#[test]
fn versions_are_deterministic_and_local() {
    let index = index_of(&["enrollment.yaml"]);
    let opts = TranslateOptions::default();
    let a = translate(&index, &opts);
    let b = translate(&index, &opts);
    assert_eq!(
        a.snapshot, b.snapshot,
        "same input, same bytes and versions"
    );

    // Relabel one pod: only its workload changes version.
    let mut objects: Vec<Object> = index.iter().map(|(_, s)| s.object.clone()).collect();
    for o in &mut objects {
        if let Object::Pod(p) = o
            && p.metadata.name == "cron"
        {
            p.metadata
                .labels
                .insert("service.istio.io/canonical-revision".into(), "r8".into());
        }
    }
    let changed = controller::model::Index::from_origins(vec![("x".into(), objects, vec![])]);
    let c = translate(&changed, &opts);
    let before = &a.snapshot.resources[api::ADDRESS_TYPE_URL];
    let after = &c.snapshot.resources[api::ADDRESS_TYPE_URL];
    assert_eq!(before.len(), after.len());
    let differing: Vec<&String> = before
        .iter()
        .filter(|(name, r)| after[*name].version != r.version)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(differing, vec!["Kubernetes//Pod/legacy/cron"]);
}

#[test]
fn options_are_used() {
    let opts = TranslateOptions {
        trust_domain: "example.org".into(),
        root_namespace: "mesh-root".into(),
        cluster_id: "east".into(),
        ..TranslateOptions::default()
    };
    let t = translate(&index_of(&["enrollment.yaml"]), &opts);
    let names: Vec<&String> = t.snapshot.resources[api::ADDRESS_TYPE_URL].keys().collect();
    assert!(
        names.contains(&&"east//Pod/legacy/cron".to_string()),
        "{names:?}"
    );
}
